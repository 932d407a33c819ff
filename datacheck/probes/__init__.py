"""Small, fast statistical probes shared by the shortcut, split, diversity and representativeness checks.

Pure numpy (plus scikit-learn where noted): cross-validated class scores and one-vs-rest AUCs
(:mod:`~datacheck.probes.cv`), image-property cues from the stats table (:mod:`~datacheck.probes.properties`),
thumbnail region descriptors (:mod:`~datacheck.probes.regions`) and ImageNet names for groups of images
(:mod:`~datacheck.probes.naming`).
"""
