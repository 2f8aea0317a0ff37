"""Convolutional families: BANG's LeNet (Rozsa, Günther and Boult 2016), CNN6 (Qin and Vucinic 2018),
Madry et al. 2018's MNIST CNN, Wong, Rice and Kolter 2020's MNIST CNN and TRADES' SmallCNN (Zhang et
al. 2019)."""
from __future__ import annotations

import keras

from zoo.models.common import NoiseArgs
from zoo.noisy_conv2d import NoisyConv2D
from zoo.noisy_dense import NoisyDense
from zoo.registry import register_model


def lenet(input_shape, num_classes, *, filters=(20, 50), dense=500, dropout=0.5, activation="relu",
          padding="auto", noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, name="lenet") -> keras.Model:
    """Caffe LeNet with one Dropout, as used by BANG (Rozsa, Günther and Boult 2016, section 4).

    conv5x5(filters[0]) -> maxpool2 -> conv5x5(filters[1]) -> maxpool2 -> dense(dense, relu)
    -> Dropout(dropout) -> dense(num_classes). Input ``[H, W, C]``, output logits.
    ``padding="auto"`` is Caffe's ``"valid"`` for inputs of 16 pixels or more and ``"same"`` for
    smaller ones (8x8 digits would shrink to nothing).
    """
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    if padding == "auto":
        padding = "valid" if min(input_shape[:2]) >= 16 else "same"
    inputs = keras.Input(shape=input_shape, name="images")
    x = NoisyConv2D(filters[0], 5, padding=padding, activation="linear", name="conv_1", **na.layer(0))(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = NoisyConv2D(filters[1], 5, padding=padding, activation="linear", name="conv_2", **na.layer(1))(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = NoisyDense(dense, activation=activation, name="dense_1", **na.layer(2))(x)
    x = keras.layers.Dropout(dropout, name="dropout", seed=seed)(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(3))(x)
    return keras.Model(inputs, outputs, name=name)


def cnn6(input_shape, num_classes, *, filters=(32, 32, 64, 64), dense=200, activation="relu",
         noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, name="cnn6") -> keras.Model:
    """Qin and Vucinic 2018's 6-layer CNN (noisy inference, Table 1).

    Conv-BN, Noise-ReLU, Conv-BN, Noise-ReLU, MaxPool, Conv-BN, Noise-ReLU, Conv-BN, Noise-ReLU,
    MaxPool, FC-BN, Noise-ReLU, FC-Noise. Widths were lost from the paper; the defaults (32, 32,
    64, 64 filters of 3x3, FC 200) are a common MNIST choice. Input ``[H, W, C]``, output logits.
    """
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, f in enumerate(filters):
        x = NoisyConv2D(f, 3, batchnorm=True, activation=activation, name=f"conv_{i + 1}", **na.layer(i))(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i // 2 + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = NoisyDense(dense, batchnorm=True, activation=activation, name="dense_1", **na.layer(len(filters)))(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(len(filters) + 1))(x)
    return keras.Model(inputs, outputs, name=name)


def madry_cnn(input_shape, num_classes, *, filters=(32, 64), dense=1024, activation="relu",
              noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, name="madry_cnn") -> keras.Model:
    """Madry et al.'s 4-layer MNIST CNN: conv5x5(32)-pool-conv5x5(64)-pool-fc(1024)-fc(classes)."""
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    inputs = keras.Input(shape=input_shape, name="images")
    x = NoisyConv2D(filters[0], 5, activation=activation, name="conv_1", **na.layer(0))(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_1")(x)
    x = NoisyConv2D(filters[1], 5, activation=activation, name="conv_2", **na.layer(1))(x)
    x = keras.layers.MaxPooling2D(2, name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = NoisyDense(dense, activation=activation, name="dense_1", **na.layer(2))(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(3))(x)
    return keras.Model(inputs, outputs, name=name)


def wong_cnn(input_shape, num_classes, *, filters=(16, 32), dense=100, activation="relu", noise="additive",
             train_stddev=0.0, infer_stddev=0.0, seed=0, kernel_initializer="glorot_uniform",
             name="wong_cnn") -> keras.Model:
    """Wong, Rice and Kolter 2020's MNIST CNN ("Fast is better than free", their code's
    ``mnist_net``): conv4x4(16, stride 2)-conv4x4(32, stride 2)-fc(100)-fc(classes), ReLU, padding
    1 on 28x28 (Keras ``same``: 28 -> 14 -> 7). Input ``[H, W, C]``, output logits (166k
    parameters on MNIST). Glorot-uniform kernels (Keras' default; PyTorch's default is of the same
    scale), not the He-normal of the other conv families: fast single-step training is sensitive to
    the initial scale."""
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, f in enumerate(filters):
        x = NoisyConv2D(f, 4, strides=2, padding="same", activation=activation, name=f"conv_{i + 1}",
                        kernel_initializer=kernel_initializer, **na.layer(i))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = NoisyDense(dense, activation=activation, name="dense_1", **na.layer(len(filters)))(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(len(filters) + 1))(x)
    return keras.Model(inputs, outputs, name=name)


def smallcnn(input_shape, num_classes, *, filters=(32, 32, 64, 64), dense=(200, 200), dropout=0.5, activation="relu",
             noise="additive", train_stddev=0.0, infer_stddev=0.0, seed=0, name="smallcnn") -> keras.Model:
    """TRADES' MNIST SmallCNN (Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan 2019, their code's ``SmallCNN``).

    conv3x3(32)-conv3x3(32)-maxpool2-conv3x3(64)-conv3x3(64)-maxpool2-fc(200)-dropout-fc(200)-fc(classes),
    ReLU, valid padding, no batch norm: with zero noise a deterministic network. Input ``[H, W, C]``
    (MNIST: 28x28x1, 312k parameters), output logits.
    """
    na = NoiseArgs(noise, train_stddev, infer_stddev, seed)
    padding = "valid" if min(input_shape[:2]) >= 16 else "same"
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, f in enumerate(filters):
        x = NoisyConv2D(f, 3, padding=padding, activation=activation, name=f"conv_{i + 1}", **na.layer(i))(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i // 2 + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for j, width in enumerate(dense):
        x = NoisyDense(width, activation=activation, name=f"dense_{j + 1}", **na.layer(len(filters) + j))(x)
        if j == 0 and dropout:
            x = keras.layers.Dropout(dropout, name="dropout", seed=seed)(x)
    outputs = NoisyDense(num_classes, name="logits", **na.layer(len(filters) + len(dense)))(x)
    return keras.Model(inputs, outputs, name=name)


register_model("lenet", "Rozsa, Günther and Boult 2016's (BANG) LeNet: conv20-pool-conv50-pool-fc500-dropout-fc")(lenet)
register_model("test_lenet", "tiny LeNet for fast tests", filters=(2, 4), dense=8, name="test_lenet")(lenet)
register_model("cnn6", "Qin and Vucinic 2018's 6-layer CNN (conv-BN-noise-ReLU x4, FC-BN-noise-ReLU, FC-noise)")(cnn6)
register_model("test_cnn6", "tiny CNN6 for fast tests", filters=(2, 2, 4, 4), dense=8, name="test_cnn6")(cnn6)
register_model("madry_cnn", "Madry et al. 2018's MNIST CNN (conv32-pool-conv64-pool-fc1024), a transfer-attack source")(madry_cnn)
register_model("test_madry_cnn", "tiny Madry CNN for fast tests", filters=(2, 4), dense=8, name="test_madry_cnn")(madry_cnn)
register_model("wong_cnn", "Wong, Rice and Kolter 2020's MNIST CNN (fast adversarial training): conv16/4s2-"
               "conv32/4s2-fc100")(wong_cnn)
register_model("smallcnn", "TRADES' MNIST SmallCNN (Zhang et al. 2019): conv32-conv32-pool-conv64-conv64-pool-"
               "fc200-fc200")(smallcnn)
register_model("test_smallcnn", "tiny SmallCNN for fast tests", filters=(2, 2, 4, 4), dense=(8, 8),
               name="test_smallcnn")(smallcnn)
