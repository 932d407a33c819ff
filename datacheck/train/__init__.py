"""Training on audited data: reference runs (cifar10) and transfer learning."""
