"""SynthActions: the project's own synthetic action dataset, written in the UCF101 layout.

Procedurally animated figures (head, torso, upper/lower arms and legs, drawn as shaded anti-aliased
capsules) perform actions in front of random backgrounds, filmed by a shaky, noisy camera. The files are
real videos (MPEG-4 Part 2 in AVI, like UCF101; H.264 MP4 as an option) so the real data path (decoding,
split files, loaders) is exercised end to end::

    OUT/classInd.txt                       "1 JumpingJacks"  (1-based, CRLF, as the official file)
    OUT/trainlist0{1,2,3}.txt              "JumpingJacks/v_JumpingJacks_g03_c01.avi 1"  (CRLF)
    OUT/testlist0{1,2,3}.txt               "JumpingJacks/v_JumpingJacks_g01_c01.avi"  (CRLF, no label)
    OUT/<Class>/v_<Class>_gXX_cYY.avi
    OUT/synth_config.yaml                  the config that made the folder (guards resumed runs)

Groups and splits. Like KTH, a group ``gXX`` is one actor (body shape, clothes, handedness, tempo, kind
of scene) who performs every action, and clip ``cYY`` of a group is filmed in the same scene (background,
position, phase, camera shake, noise) for every class, so neither the actor nor the scene tells the
class. Like UCF101, groups never straddle train and test: split k tests on the k-th block of
``max(1, groups // 4)`` groups, counted from g01 (8 groups: split 1 tests g01-g02, split 2 g03-g04,
split 3 g05-g06), and trains on all the other groups. As many of the three splits are written as the
number of groups allows.

Classes (:data:`SYNTH_CLASSES`; the default is the first 10). Some pairs differ only in motion, which a
single frame cannot tell apart:

* ``SquatDown`` / ``StandUp``, ``WalkToward`` / ``WalkAway``, ``WalkLeft`` / ``WalkRight``: the second
  class's video is the first one's frames in reverse order (same set of frames, opposite order);
* ``WaveSlow`` / ``WaveFast``: the same waving poses at a tempo about three times higher; the first frame
  of the two videos is the same.

The others differ in pose: ``JumpingJacks``, ``Punch``, ``Kick``, ``Bow``, ``Clap``. ``WalkLeft`` and
``WalkRight`` (not in the default 10) are mirror images of each other, so training with random horizontal
flips mixes them up; every other class keeps its label under a flip.

Appearance cues (:mod:`~distilled_shufflenet.data.synth.cues`). By default only the motion tells the class.
With ``cue_strength`` p, each video shows its class's prop (a ball, box, pole, signpost or barbell of a
class-typical colour, :func:`cue_of`, the same for every seed) with probability p and none otherwise, so
that a single frame can tell the class as UCF101's scenes and objects do. At p = 0 the videos are those of
the generator without cues, bit for bit.

Everything is a pure function of the seed and the (class, group, clip) numbers, so the same config gives
the same decoded frames whatever the number of workers.
"""

from distilled_shufflenet.data.synth.config import (
    DEFAULT_CLASSES,
    SYNTH_CLASSES,
    SynthConfig,
    synth_test_groups,
    synth_video_name,
)
from distilled_shufflenet.data.synth.cues import CROP_SHARE, CUE_SHAPES, Cue, cue_of, place_cue
from distilled_shufflenet.data.synth.motion import render_synth_clip
from distilled_shufflenet.data.synth.write import SynthReport, generate_synth_actions, write_synth_video

__all__ = [
    "CROP_SHARE",
    "CUE_SHAPES",
    "Cue",
    "DEFAULT_CLASSES",
    "SYNTH_CLASSES",
    "SynthConfig",
    "SynthReport",
    "cue_of",
    "generate_synth_actions",
    "place_cue",
    "render_synth_clip",
    "synth_test_groups",
    "synth_video_name",
    "write_synth_video",
]
