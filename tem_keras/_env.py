"""Environment defaults that must be in place before third-party imports.

albumentations checks PyPI for updates at import time and segmentation_models picks its Keras
flavour from ``SM_FRAMEWORK``; TensorFlow's C++ start-up chatter is lowered unless the user set it.
Values the user has set are left alone.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
