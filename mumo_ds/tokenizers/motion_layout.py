"""Layout of the HumanML3D 263-d motion features (22 joints, SMPL order).

Per frame ``t`` (one row of a ``[T, 263]`` array)::

    [0]        root angular velocity about Y: half the yaw change from frame t to t+1 (radians)
    [1:3]      root linear velocity X/Z from frame t to t+1, in the heading frame of frame t+1 (m/frame)
    [3]        root height Y (m)
    [4:67]     joints 1..21 relative to the root in the heading frame of frame t (X/Z relative, Y absolute)
    [67:193]   joints 1..21 local rotations, 6D (first two columns of the rotation matrix)
    [193:259]  joints 0..21 velocity from frame t to t+1, in the heading frame of frame t (m/frame)
    [259:263]  foot contacts: left ankle 7, left foot 10, right ankle 8, right foot 11 (0/1)

Facts checked on the bundled clip are in ``notes/motion_features.md``.
"""

from __future__ import annotations

NUM_JOINTS = 22
FEATURE_DIM = 263

ROOT_ROT_VEL = slice(0, 1)
ROOT_LIN_VEL = slice(1, 3)
ROOT_HEIGHT = slice(3, 4)
RIC = slice(4, 4 + (NUM_JOINTS - 1) * 3)  # 4:67
ROT6D = slice(67, 67 + (NUM_JOINTS - 1) * 6)  # 67:193
LOCAL_VEL = slice(193, 193 + NUM_JOINTS * 3)  # 193:259
FOOT_CONTACT = slice(259, 263)

# Channels that are per-frame differences (they scale with 1 / fps).
VELOCITY_CHANNELS = (ROOT_ROT_VEL, ROOT_LIN_VEL, LOCAL_VEL)

FOOT_JOINTS = (7, 10, 8, 11)  # the order of the 4 contact channels
KINEMATIC_CHAINS = (
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
BONES = tuple((a, b) for chain in KINEMATIC_CHAINS for a, b in zip(chain[:-1], chain[1:]))  # 21 (parent, child)

# HumanML3D's foot_detect: contact when the squared per-frame displacement of a foot joint is
# below 0.002 m^2 at 20 frames/s, i.e. a speed below sqrt(0.002) * 20 = 0.894 m/s.
CONTACT_FPS = 20.0
CONTACT_SQ_DISP = 0.002
