"""Exercise checks: ``check_<name>(learner_fn)``, one file per topic.

A check prints one line when your answer is right; otherwise it raises an
``AssertionError`` that names the likely mistake, or shows expected against got.
"""

from labhelpers.grading.circuits import *  # noqa: F403
from labhelpers.grading.core import Mistake, check_function
from labhelpers.grading.features import *  # noqa: F403
from labhelpers.grading.numpy_sae import *  # noqa: F403
from labhelpers.grading.quiz import *  # noqa: F403
from labhelpers.grading.sae import *  # noqa: F403
from labhelpers.grading.steering import *  # noqa: F403
from labhelpers.grading.toy import *  # noqa: F403
from labhelpers.grading.transcoder import *  # noqa: F403
from labhelpers.grading.warmup import *  # noqa: F403

__all__ = ["Mistake", "check_function"]
