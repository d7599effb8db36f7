"""Single-label image folders ``root/<class_name>/**/*.jpg`` -> int class ids.

Classes are the sub-folders of ``root`` (sorted by name unless ``class_names`` is given);
images are found recursively inside each class folder, sorted by path; hidden files and
folders (starting with ``.``) are ignored; only files with an image extension are taken.
"""
import os

import numpy as np

from keras_mld.data.pipeline import LabelledImages
from keras_mld.untrusted import inside_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def load_image_folder(root, class_names=None, extensions=IMAGE_EXTENSIONS):
    """Reads ``root/<class>/...`` into a single-label :class:`LabelledImages`.

    Args:
        root: dataset folder with one sub-folder per class.
        class_names: classes to use, in class-id order (each must be a sub-folder);
            default: all non-hidden sub-folders, sorted.
        extensions: file name endings (case-insensitive) counted as images.

    Raises:
        ValueError: ``root`` or a named class folder missing (or a class name that is not
            a plain sub-folder name, such as ``..``), or no image found.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"load_image_folder: folder not found: {root!r}")
    if class_names is None:
        class_names = sorted(d for d in os.listdir(root)
                             if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    else:
        class_names = [str(c) for c in class_names]
        for name in class_names:
            folder = inside_root(root, name, "load_image_folder: class_names")
            if folder == os.path.normpath(root) or os.path.dirname(folder) != \
                    os.path.normpath(root):
                raise ValueError(f"load_image_folder: class name {name!r} is not a sub-folder "
                                 f"name of {root!r}")
            if not os.path.isdir(folder):
                raise ValueError(f"load_image_folder: class folder not found: "
                                 f"{os.path.join(root, name)!r}")
    if not class_names:
        raise ValueError(f"load_image_folder: no class sub-folders in {root!r}")
    extensions = tuple(e.lower() for e in extensions)
    paths, ids = [], []
    for class_id, name in enumerate(class_names):
        found = []
        for folder, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [os.path.join(folder, f) for f in files
                      if not f.startswith(".") and f.lower().endswith(extensions)]
        found.sort()
        paths += [os.path.abspath(p) for p in found]
        ids += [class_id] * len(found)
    if not paths:
        raise ValueError(f"load_image_folder: no images with extensions {extensions} "
                         f"under {root!r}")
    return LabelledImages(paths, np.array(ids, np.int32), class_names, "singlelabel")
