"""Clip-level motion features for FID_k / FID_m: the AIST++ / Bailando definitions, vectorised.

Input: world joint positions [T, 22, 3] (metres, Y up) in HumanML3D order, which is the order of
the first 22 SMPL joints (the names in brackets are the reference code's)::

    0 pelvis [root]     1 l_hip [lhip]       2 r_hip [rhip]        3 spine1 [belly]
    4 l_knee [lknee]    5 r_knee [rknee]     6 spine2 [spine]      7 l_ankle [lankle]
    8 r_ankle [rankle]  9 spine3 [chest]    10 l_foot [ltoes]     11 r_foot [rtoes]
   12 neck [neck]      13 l_collar [linshoulder]  14 r_collar [rinshoulder]  15 head [head]
   16 l_shoulder [lshoulder]  17 r_shoulder [rshoulder]  18 l_elbow [lelbow]  19 r_elbow [relbow]
   20 l_wrist [lwrist]  21 r_wrist [rwrist]

SMPL's two hand joints (22, 23) are not in HumanML3D, so the kinetic vector is shorter (66 numbers
instead of the reference's 72), and the floor height of the four ``y_min`` relations is the lowest of
22 joints where the reference takes 24 (they differ only when a hand is the lowest point).
As in the reference evaluation, positions are first made relative to the root of the first frame.

Kinetic features (AIST++ evaluation): per joint and frame t = 1..T-1, the velocity is the mean
displacement over the window of frames t-2..t+2 that lie in the clip, divided by the frame time;
the features are mean |v_xz|^2 (horizontal kinetic energy, no factor 1/2 in the reference), mean v_y^2
(vertical) and the mean norm of the window-averaged acceleration (energy expenditure).
The reference computes the earlier velocity of each acceleration as ``p[s] - p[s-1] / dt`` (an
operator-precedence slip); ``reference_acceleration=True`` (the default) keeps it so that numbers
compare with published tables, ``False`` uses the physical ``(p[s] - p[s-1]) / dt``. The slip scales with the
frame time, so only clips at the reference's 60 fps compare with those tables; at MuMo's 50 fps compare
checkpoints with each other (or resample the joints to 60 fps first).

Geometric ("manual") features: the 32 boolean relations of Müller et al. that AIST++ / Bailando
evaluate (fairmotion's list), each the fraction of frames 1..T-1 in which it holds. Distances are
thresholded in multiples of the SMPL template's humerus length, shoulder width and hip width, and
velocities use the reference's fixed frame time of 1/120 s whatever the clip's frame rate.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 22
JOINTS = {name: i for i, name in enumerate((
    "root", "lhip", "rhip", "belly", "lknee", "rknee", "spine", "lankle", "rankle", "chest", "ltoes", "rtoes",
    "neck", "linshoulder", "rinshoulder", "head", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist", "rwrist",
))}
# Body scale from the SMPL template's rest pose (metres), as in the reference.
_TEMPLATE = {
    "lshoulder": (1.99113488e-01, 2.36807942e-01, -1.80702247e-02),
    "rshoulder": (-1.91692337e-01, 2.36928746e-01, -1.23055102e-02),
    "lelbow": (4.54445392e-01, 2.21158922e-01, -4.10167128e-02),
    "lhip": (5.64076714e-02, -3.23069185e-01, 1.09197125e-02),
    "rhip": (-6.24834076e-02, -3.31302464e-01, 1.50412619e-02),
}
_dist = lambda a, b: float(np.linalg.norm(np.subtract(_TEMPLATE[a], _TEMPLATE[b])))  # noqa: E731
HL, SW, HW = _dist("lshoulder", "lelbow"), _dist("lshoulder", "rshoulder"), _dist("lhip", "rhip")
RELATION_FRAME_TIME = 1 / 120

# (relation, joints, threshold or angle range in degrees); geometric_features() spells out each relation.
RELATIONS = [
    ("nmove", ("neck", "rhip", "lhip", "rwrist"), 1.8 * HL),
    ("nmove", ("neck", "lhip", "rhip", "lwrist"), 1.8 * HL),
    ("nplane", ("chest", "neck", "neck", "rwrist"), 0.2 * HL),
    ("nplane", ("chest", "neck", "neck", "lwrist"), 0.2 * HL),
    ("move", ("belly", "chest", "chest"), 1.8 * HL),  # the reference names rwrist / lwrist 4th and never reads it
    ("move", ("belly", "chest", "chest"), 1.8 * HL),
    ("angle", ("relbow", "rshoulder", "relbow", "rwrist"), (0, 110)),
    ("angle", ("lelbow", "lshoulder", "lelbow", "lwrist"), (0, 110)),
    ("nplane", ("lshoulder", "rshoulder", "lwrist", "rwrist"), 2.5 * SW),
    ("move", ("lwrist", "rwrist", "rwrist"), 1.4 * HL),
    ("move", ("rwrist", "root", "lwrist"), 1.4 * HL),
    ("move", ("lwrist", "root", "rwrist"), 1.4 * HL),
    ("fast", ("rwrist",), 2.5 * HL),
    ("fast", ("lwrist",), 2.5 * HL),
    ("plane", ("root", "lhip", "ltoes", "rankle"), 0.38 * HL),
    ("plane", ("root", "rhip", "rtoes", "lankle"), 0.38 * HL),
    ("nplane", ("zero", "y_unit", "y_min", "rankle"), 1.2 * HL),
    ("nplane", ("zero", "y_unit", "y_min", "lankle"), 1.2 * HL),
    ("nplane", ("lhip", "rhip", "lankle", "rankle"), 2.1 * HW),
    ("angle", ("rknee", "rhip", "rknee", "rankle"), (0, 110)),
    ("angle", ("lknee", "lhip", "lknee", "lankle"), (0, 110)),
    ("fast", ("rankle",), 2.5 * HL),
    ("fast", ("lankle",), 2.5 * HL),
    ("angle", ("neck", "root", "rshoulder", "relbow"), (25, 180)),
    ("angle", ("neck", "root", "lshoulder", "lelbow"), (25, 180)),
    ("angle", ("neck", "root", "rhip", "rknee"), (50, 180)),
    ("angle", ("neck", "root", "lhip", "lknee"), (50, 180)),
    ("plane", ("rankle", "neck", "lankle", "root"), 0.5 * HL),
    ("angle", ("neck", "root", "zero", "y_unit"), (70, 110)),
    ("nplane", ("zero", "minus_y_unit", "y_min", "rwrist"), -1.2 * HL),
    ("nplane", ("zero", "minus_y_unit", "y_min", "lwrist"), -1.2 * HL),
    ("fast", ("root",), 2.3 * HL),
]


def _check(joints: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or joints.shape[0] < 3:
        raise ValueError(f"joints: expected [T >= 3, 22, 3], got {list(joints.shape)}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain NaN or inf")
    return joints - joints[:1, :1]  # relative to the first frame's root


def _window_mean(x: np.ndarray, first: int, last: int, half: int = 2) -> np.ndarray:
    """For t in first..last: the mean of x[s] over s in t-half..t+half within 0..len(x)-1 (axis 0)."""
    csum = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)])
    t = np.arange(first, last + 1)
    lo, hi = np.clip(t - half, 0, len(x)), np.clip(t + half + 1, 0, len(x))
    return (csum[hi] - csum[lo]) / (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))


def kinetic_features(joints: np.ndarray, fps: float, reference_acceleration: bool = True) -> np.ndarray:
    """[T, 22, 3] -> [66]: per joint (horizontal KE, vertical KE, energy expenditure)."""
    p = _check(joints)
    dt, n = 1.0 / fps, len(p)
    step = np.diff(p, axis=0)  # step[s - 1] = p[s] - p[s-1], s = 1..T-1
    velocity = _window_mean(step, 0, n - 2) / dt  # frames t = 1..T-1 (window over s = t-2..t+2)
    horizontal = (velocity[..., 0] ** 2 + velocity[..., 2] ** 2).mean(axis=0)
    vertical = (velocity[..., 1] ** 2).mean(axis=0)
    # acceleration at s = 1..T-2 from the velocities of s -> s+1 and s-1 -> s
    earlier = p[1:-1] - p[:-2] / dt if reference_acceleration else step[:-1] / dt
    acceleration = (step[1:] / dt - earlier) / dt
    # frame t averages s = t-2..t+2 within 1..T-2: acceleration's index s - 1, a window around t - 1
    mean_acc = _window_mean(acceleration, 0, n - 2)
    expenditure = np.linalg.norm(mean_acc, axis=-1).mean(axis=0)
    return np.stack([horizontal, vertical, expenditure], axis=1).reshape(-1)  # [22, 3] -> [66]


def _unit_along(v: np.ndarray, direction: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero direction gives NaN: the relation is False
        return (v * direction).sum(-1) / np.linalg.norm(direction, axis=-1)


def geometric_features(joints: np.ndarray) -> np.ndarray:
    """[T, 22, 3] -> [32]: the fraction of frames 1..T-1 in which each reference relation holds."""
    p = _check(joints)
    cur, before = p[1:], p[:-1]
    constants = {"zero": (0.0, 0.0, 0.0), "y_unit": (0.0, 1.0, 0.0), "minus_y_unit": (0.0, -1.0, 0.0)}
    y_min = np.zeros_like(cur[:, 0])
    y_min[:, 1] = cur[..., 1].min(axis=1)

    def at(name: str) -> np.ndarray:
        if name == "y_min":
            return y_min
        if name in constants:
            return np.broadcast_to(np.asarray(constants[name]), cur[:, 0].shape)
        return cur[:, JOINTS[name]]

    def moved(name: str, origin: str) -> np.ndarray:  # displacement of name relative to origin, per second
        return (at(name) - at(origin) - (before[:, JOINTS[name]] - before[:, JOINTS[origin]])) / RELATION_FRAME_TIME

    out = []
    for kind, names, limit in RELATIONS:
        if kind == "move":  # velocity of c relative to a, along a -> b
            a, b, c = names
            value = _unit_along(moved(c, a), at(b) - at(a))
        elif kind == "nmove":  # velocity of d relative to a, along the normal of the plane (a, b, c)
            a, b, c, d = names
            value = _unit_along(moved(d, a), np.cross(at(c) - at(a), at(b) - at(a)))
        elif kind == "plane":  # signed distance of d from the plane through a, b, c
            a, b, c, d = names
            value = _unit_along(at(d) - at(a), np.cross(at(c) - at(a), at(b) - at(a)))
        elif kind == "nplane":  # signed distance of d from the plane through c with normal a -> b
            a, b, c, d = names
            value = _unit_along(at(d) - at(c), at(b) - at(a))
        elif kind == "fast":  # speed of a joint
            value = np.linalg.norm(cur[:, JOINTS[names[0]]] - before[:, JOINTS[names[0]]], axis=-1) / RELATION_FRAME_TIME
        else:  # "angle" in degrees between a -> b and c -> d, inside the open range
            a, b, c, d = names
            with np.errstate(invalid="ignore", divide="ignore"):
                cos = _unit_along(at(b) - at(a), at(d) - at(c)) / np.linalg.norm(at(b) - at(a), axis=-1)
            angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
            out.append(((angle > limit[0]) & (angle < limit[1])).mean())
            continue
        out.append((value > limit).mean())
    return np.asarray(out)
