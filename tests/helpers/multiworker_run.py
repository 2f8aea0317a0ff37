"""One worker of a two-worker MultiWorkerMirroredStrategy run on 127.0.0.1 (or a single-worker run).

Usage: multiworker_run.py INDEX PORT0,PORT1 OUT [single]
Trains test_mlp on 320 digits with global batch 32 for 3 epochs; each worker checkpoints to its own
folder (OUT/worker<INDEX>), worker 0 (the chief) exports to it; the final trainable weights go to
OUT/worker<INDEX>.npz. ``GLRZOO_SLOW_STEP`` (seconds) slows every step so a test can kill a worker mid-epoch.
"""
import json
import os
import sys
import time

index, ports, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
single = len(sys.argv) > 4 and sys.argv[4] == "single"
if not single:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})

import keras  # noqa: E402

keras.config.disable_traceback_filtering()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.run import TrainConfig, train  # noqa: E402
from zoo.data import load_digits  # noqa: E402


class Slow(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


strategy = None if single else tf.distribute.MultiWorkerMirroredStrategy()
data = load_digits().subset(320, 64)
config = TrainConfig(model="test_mlp", dataset="digits", epochs=3, batch_size=32, lr=1e-2, train_stddev=0.3,
                     verbose=0, out=os.path.join(out, f"worker{index}"), resume=os.environ.get("GLRZOO_RESUME") == "1")
slow = float(os.environ.get("GLRZOO_SLOW_STEP", "0"))
meta = train(config, data=data, strategy=strategy, callbacks=[Slow(slow)] if slow else None)
np.savez(os.path.join(out, f"worker{index}.npz"), *[v.numpy() for v in meta["model"].trainable_variables])
print(json.dumps({"index": index, "replicas": strategy.num_replicas_in_sync if strategy else 1,
                  "test_accuracy": meta["metrics"]["test_accuracy"]}))
