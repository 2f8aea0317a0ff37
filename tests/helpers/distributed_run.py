"""Run one method on digits on 1 device and under MirroredStrategy over 2 logical CPUs; print max weight gap.

Run as a script (logical devices must be configured before TensorFlow initializes them).
"""
import dataclasses
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from training.run import TrainConfig, train  # noqa: E402
from zoo.data import load_digits  # noqa: E402

method = sys.argv[1]
args = {"bp": {}, "bang": {"epsilon": 0.8}, "glr": {"replications": 8, "baseline": True}}[method]
data = load_digits().subset(320, 64)
config = TrainConfig(model="mlp", dataset="digits", method=method, epochs=2, batch_size=32, lr=1e-2,
                     train_stddev=0.3, activation="sigmoid", model_args={"hidden": [16]}, verbose=0,
                     method_args=args)

def trainable(meta):
    return [v.numpy() for v in meta["model"].trainable_variables]


initial = trainable(train(dataclasses.replace(config, epochs=1, lr=1e-12), data=data))
single = trainable(train(config, data=data))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = trainable(train(config, data=data, strategy=strategy))
gap = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single, initial))
print(json.dumps({"method": method, "replicas": strategy.num_replicas_in_sync, "max_gap": gap, "max_moved": moved}))
