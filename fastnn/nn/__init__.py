"""fastnn.nn: a Keras-style model API over fastnn.ops and fastnn.optim.

    from fastnn.nn import Sequential, Conv2D, MaxPool2D, Flatten, Dense

    model = Sequential([Conv2D(16, 3, padding="same", activation="relu", input_shape=(1, 28, 28)),
                        MaxPool2D(2), Flatten(), Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, t_train, epochs=5, batch_size=64, validation_split=0.1)
    model.save("model.npz"); model = fastnn.nn.load_model("model.npz")

Images are NCHW (channels first) unless a layer is given data_format="channels_last" or
set_image_data_format("channels_last") is called first (Keras's default). See docs/NN.md.
"""
from fastnn.nn import callbacks, initializers, losses, metrics, preprocessing, regularizers
from fastnn.nn.callbacks import (Callback, CSVLogger, EarlyStopping, History, LambdaCallback, LearningRateScheduler,
                                 ModelCheckpoint, ReduceLROnPlateau, StopAtThreshold, StopOnSmallWeightChange,
                                 TargetAccuracy, TerminateOnNaN)
from fastnn.nn.gradcheck import gradcheck
from fastnn.nn.layers import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                              GlobalAveragePooling2D, GlobalMaxPooling2D, Input, InputLayer, Layer, MaxPool2D,
                              Reshape, image_data_format, set_image_data_format)
from fastnn.nn.model import Sequential
from fastnn.nn.serialization import load_model, save_model

# Keras spellings.
MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
BatchNormalization = BatchNorm
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D

__all__ = [
    "Sequential", "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "Dropout", "BatchNorm",
    "Activation", "MaxPooling2D", "AveragePooling2D", "BatchNormalization", "Input", "InputLayer", "Reshape",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
    "Callback", "History", "EarlyStopping", "StopAtThreshold", "TargetAccuracy", "StopOnSmallWeightChange",
    "LearningRateScheduler", "TerminateOnNaN", "ModelCheckpoint", "ReduceLROnPlateau", "CSVLogger", "LambdaCallback",
    "load_model", "save_model", "gradcheck", "image_data_format", "set_image_data_format",
    "callbacks", "initializers", "losses", "metrics", "preprocessing", "regularizers",
]
