"""Mask R-CNN for per-slice particle instances (Supp. Fig. 4, Supp. Note 1), split the torchvision way.

:mod:`.model` settings, model building, input tensors, device and precision; :mod:`.engine` training
(step, epoch, validation, resume, driver); :mod:`.predict` inference, test-time augmentation and
painting; :mod:`.checkpoint` safe checkpoint files; :mod:`.activation` activation maps.
:mod:`detachment.maskrcnn` re-exports the public names.
"""
