"""``datacheck cifar10 train``: a reference CIFAR-10 training run on the CPU, GPUs or several machines.

Train on the original and on the fixed data, then compare test accuracy on the full and the leak-free test
set (docs/cifar10.md). Entry point: :func:`datacheck.train.cifar10.train.train` with a
:class:`~datacheck.train.cifar10.params.TrainParams`. Importing this package does not import TensorFlow.
"""
