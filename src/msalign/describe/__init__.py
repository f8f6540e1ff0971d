"""Describe the non-verbal streams of a clip in words (for the text-centric model ``textalign``).

``msalign describe FEATURE_DIR`` writes ``FEATURE_DIR/descriptions.json``: one structured
description per clip, e.g. "Face: smiling strongly, brows raised. Head: nodding. Voice: high
pitch, loud, fast.", and the describer's identity (for the rule describer: its fitted
thresholds). Loading the folder with ``descriptions=True`` (``--descriptions`` on the command
line) appends each clip's description to its transcript ("transcript [SEP] Face: ...") before
text encoding, so transcript and description share ONE text encoder and one token sequence.

Describers (:class:`~msalign.describe.rules.Describer`: ``describe(ClipSignals) -> str``):

* ``rules`` (default; offline, deterministic): :class:`~msalign.describe.rules.RuleDescriber`.
  Face: smile (mouthSmile), brows raised (browInnerUp, browOuterUp), frown (browDown), eyes wide
  (eyeWide), eyes closing (eyeBlink), mouth open (jawOpen), averaged over the face frames. Head:
  nodding (std of pitch over frames), shaking (std of yaw), tilted (|mean roll|), turned aside
  (|mean yaw|). Voice: pitch level and variability (voiced log2 f0), loudness (log RMS over
  voiced frames), pace (words per second from the word timestamps in ``transcripts.json``; else
  voiced-segment onsets per voiced second). Every threshold is a percentile (33 / 66 / 90) of the
  training clips' values, stored in descriptions.json and reusable with ``--thresholds FILE``.
  A clip without a face says "Face: none detected." (or "no video"), one without speech
  "Voice: no speech." / "Voice: none (no audio track)."; nothing is silently left out.
* any Hugging Face image-to-text model, by hub name (already in the local cache) or local
  folder: :class:`~msalign.describe.model.ModelDescriber` captions the image, or frames sampled
  from the clip's video (media paths are in ``transcripts.json``), and adds the rule voice part.

Image-text datasets (MVSA-Single/Multiple, Twitter-2015/2017 style; layout in
:mod:`msalign.describe.sources`): ``msalign describe IMAGE_DATASET --out FEATURE_DIR`` runs the
MediaPipe face landmarker on each image ("Face: none detected." when it finds no face), writes a
feature directory (label.csv with the texts, vision.npz) and its descriptions.json; ``msalign
train --model textalign --dataset FEATURE_DIR --descriptions`` trains on it.

What can and cannot be described on ../shared/data/mosi (CMU-MOSI as shipped here): there is no
video and no visual feature at all, so no face or head description is possible: every clip gets
"Face: no video.". The audio is ONE 73-d openSMILE functional vector per clip with no time axis
and no dimension names, so pitch, loudness, pace and pauses cannot be read off it: the rule
describer can only standardise the vector with training statistics, project it on its first three
principal axes (fitted on the training clips) and band each projection at the training
percentiles: "Voice: acoustic component 1 high, acoustic component 2 low, acoustic component 3
medium." Those components have no established meaning (they are directions of largest variance
of unnamed functionals, not "pitch" or "energy"), and the README's ridge baseline puts the whole
vector near chance (Corr 0.03), so such descriptions should not be expected to help; they are
honest about what is there rather than informative. Real descriptions of MOSI need the raw
videos, run through ``msalign extract`` and then ``msalign describe``. The shared folder is
read-only input: write the file elsewhere with ``msalign describe ../shared/data/mosi --out
FILE.json`` and load with ``--descriptions FILE.json``.
"""

from msalign.describe.rules import ClipSignals, Describer, RuleDescriber, clip_statistics

__all__ = ["ClipSignals", "Describer", "RuleDescriber", "clip_statistics"]
