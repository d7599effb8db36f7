"""Data side (tf.data): loaders for labelled image sources and the input pipeline.

    source = keras_mld.data.load_coco("annotations/instances_train2017.json", "train2017")
    train_ds = keras_mld.data.make_dataset(source, 448, 56, training=True,
                                           augment="randaugment", seed=0)
"""
from keras_mld.data.augment import AUGMENTS, make_augmenter
from keras_mld.data.coco import load_coco
from keras_mld.data.csv import load_csv
from keras_mld.data.digits import DIGIT_NAMES, DigitsDataset, load_source_digits, \
    make_digits_dataset
from keras_mld.data.folders import IMAGE_EXTENSIONS, load_image_folder
from keras_mld.data.image import decode_and_resize, resize
from keras_mld.data.label_mask import ctran_label_mask, ctran_label_mask_dataset
from keras_mld.data.checks import SkippedImagesWarning, check_images
from keras_mld.data.pipeline import LabelledImages, make_dataset
from keras_mld.data.tfrecords import TFRecordSource, load_tfrecords, pack_tfrecords

__all__ = [
    "AUGMENTS", "ctran_label_mask", "ctran_label_mask_dataset", "make_augmenter",
    "DIGIT_NAMES", "DigitsDataset", "IMAGE_EXTENSIONS", "LabelledImages",
    "SkippedImagesWarning", "check_images", "decode_and_resize", "load_coco", "load_csv",
    "load_image_folder", "load_source_digits", "load_tfrecords", "make_dataset",
    "make_digits_dataset", "pack_tfrecords", "resize", "TFRecordSource",
]
