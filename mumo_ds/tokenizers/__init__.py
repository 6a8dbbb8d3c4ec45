"""Tokenizers: music codec and motion features / motion VQ-VAE.

Motion (import the modules directly; nothing heavy is imported here):

- ``motion_layout``: the 263 channels of the HumanML3D features.
- ``motion_features``: load / check / normalise features, recover joints, resample (public API).
- ``motion_kinematics``: features <-> absolute heading and world joint positions.
- ``motion_resample``: resampling that keeps the motion, and the naive reference bug.
- ``motion_vqvae``: ``MotionVQVAEConfig`` / ``MotionVQVAE`` (features at 50 fps <-> codes [B, 4, T]).
"""
