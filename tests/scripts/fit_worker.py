"""Runs one ``tem_keras.fit`` in its own process, for the distribution and resume tests.

usage: fit_worker.py DATASET RUN_DIR JSON_KWARGS [N_LOGICAL_CPUS]
"""

import json
import sys

if len(sys.argv) > 4:  # split the CPU into logical devices before TensorFlow starts
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[4]))

import tem_keras.training as training  # noqa: E402

run = training.fit(sys.argv[1], run_dir=sys.argv[2], **json.loads(sys.argv[3]))
print("HISTORY", json.dumps(run.history["loss"].tolist()))
