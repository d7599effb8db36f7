"""``keras_mld.ImageClassifier``: a backbone, a head and a preprocessor as one Keras task.

The shape follows keras-hub's tasks (a ``keras.Model`` subclass built functionally from a
backbone sub-model, with ``get_config``/``from_config`` serialising its parts), and adds
what gives the outputs a meaning: ``class_names``, per-class ``thresholds`` and the ``task``
(``"multilabel"``: sigmoid scores; ``"singlelabel"``: softmax scores). All of them are in the
config, so a ``.keras`` file (loaded with ``safe_mode=True``), a preset folder and the
exporters carry them.

Graph: ``images`` (uint8 or float RGB in [0, 255], any size) -> ``preprocessor`` (resize as
in training, backbone normalisation) -> ``backbone`` -> ``head`` -> ``logits`` ``[B, N]``
(float32). A head with extra inputs (C-Tran's ``known_labels``, the zero-shot decoder's
``label_vectors``) makes the model take a dict ``{"images": ..., <name>: ...}``.
"""
import keras
import numpy as np

from keras_mld.metadata import (IMAGES_INPUT, KNOWN_LABELS_INPUT, check_class_names,
                                check_task, check_thresholds, scores_from_logits)
from keras_mld.models.presets import load_preset, save_preset
from keras_mld.models.images import image_batches
from keras_mld.models.preprocessor import ImageClassifierPreprocessor
from keras_mld.untrusted import MAX_REQUEST_BYTES

# the papers' training defaults (ML-Decoder / ASL MS-COCO recipe): compile()
DEFAULT_LR = 1e-4
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_ASL = {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05}
# the exact mAP metric holds every sample of an evaluation: at most this many floats
MAP_BUFFER_FLOATS = 8_000_000


# ----------------------------------------------------------------------------- the task
@keras.saving.register_keras_serializable(package="keras_mld")
class ImageClassifier(keras.Model):
    """Multi-label (or single-label) image classifier: preprocessor, backbone and head.

    Usually made by :func:`keras_mld.build` or :meth:`from_preset`.

    Args:
        backbone: a ``keras.Model`` mapping normalised pixels to features ``[B, H, W, C]``
            or tokens ``[B, T, C]``.
        head: a ``keras.Model`` whose first input takes the backbone's features (further
            inputs, e.g. ``known_labels``, become inputs of this model) and whose output is
            logits ``[B, N]``.
        preprocessor: an :class:`ImageClassifierPreprocessor`; default: resize to the
            backbone's static input size, normalisation ``"unit"`` (x / 255).
        class_names: ``N`` unique names (default ``"0"`` ... ``"N-1"``).
        thresholds: per-class decision thresholds on the scores (see
            :func:`keras_mld.metadata.check_thresholds`; default 0.5).
        task: ``"multilabel"`` (sigmoid scores) or ``"singlelabel"`` (softmax scores).

    Attributes ``backbone``, ``head``, ``preprocessor``, ``class_names``, ``thresholds``,
    ``task``, ``num_classes``, ``image_size``.

    Examples:
        >>> import numpy as np
        >>> import keras_mld
        >>> model = keras_mld.build("small_convnet", class_names=["cat", "dog", "car"],
        ...                         input_shape=(32, 32, 3), num_groups=3, embed_dim=16,
        ...                         num_heads=2, ff_dim=32)
        >>> model.class_names, model.image_size
        (['cat', 'dog', 'car'], (32, 32))
        >>> model.thresholds = {"dog": 0.3}  # per class; the others keep 0.5
        >>> model.thresholds
        [0.5, 0.3, 0.5]
        >>> images = np.zeros((2, 48, 64, 3), "uint8")  # any size: resized inside the model
        >>> out = model.predict_labels(images, top_k=2)
        >>> len(out), sorted(out[0]), len(out[0]["top_k"])
        (2, ['labels', 'top_k'], 2)
        >>> all(score >= model.thresholds[model.class_names.index(name)]
        ...     for name, score in out[0]["labels"])
        True
    """

    def __init__(self, backbone, head, preprocessor=None, class_names=None, thresholds=None,
                 task="multilabel", **kwargs):
        task = check_task(task)
        for arg, value in (("backbone", backbone), ("head", head)):
            if not isinstance(value, keras.Model):
                raise ValueError(f"{arg}: expected a keras.Model, got {type(value).__name__}")
        if len(head.outputs) != 1 or len(head.outputs[0].shape) != 2 \
                or head.outputs[0].shape[-1] is None:
            raise ValueError("head: expected one output, logits [B, N] with a static N, got "
                             f"{[tuple(o.shape) for o in head.outputs]}")
        num_classes = int(head.outputs[0].shape[-1])
        backbone_size = _static_size(backbone)
        if preprocessor is None:
            preprocessor = ImageClassifierPreprocessor(backbone_size, "unit", name="preprocessor")
        if not isinstance(preprocessor, ImageClassifierPreprocessor):
            raise ValueError("preprocessor: expected an ImageClassifierPreprocessor, got "
                             f"{type(preprocessor).__name__}")
        if backbone_size is not None and preprocessor.image_size not in (None, backbone_size):
            raise ValueError(f"preprocessor: image_size {preprocessor.image_size} differs from "
                             f"the backbone's input size {backbone_size}")
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        class_names = check_class_names(class_names, num_classes)
        thresholds = check_thresholds(thresholds, class_names)

        # === layers ===
        self.backbone = backbone
        self.head = head
        self.preprocessor = preprocessor

        # === functional model ===
        images = keras.Input(shape=(None, None, 3), name=IMAGES_INPUT)
        features = backbone(preprocessor(images))
        extras = [keras.Input(shape=t.shape[1:], name=t.name, dtype=t.dtype)
                  for t in head.inputs[1:]]
        logits = head([features, *extras] if extras else features)
        logits = keras.layers.Identity(name="logits", dtype="float32")(logits)
        inputs = {IMAGES_INPUT: images, **{t.name: t for t in extras}} if extras else images
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === config ===
        self._task = task
        self._class_names = tuple(class_names)
        self._thresholds = tuple(thresholds)

    # ------------------------------------------------------------------ metadata
    @property
    def task(self):
        return self._task

    @property
    def class_names(self):
        return list(self._class_names)

    @property
    def num_classes(self):
        return len(self._class_names)

    @property
    def image_size(self):
        """``(height, width)`` images are resized to (None: any size)."""
        return self.preprocessor.image_size

    @property
    def thresholds(self):
        return list(self._thresholds)

    @thresholds.setter
    def thresholds(self, value):
        self._thresholds = tuple(check_thresholds(value, self.class_names))

    @property
    def zero_shot_decoder(self):
        """The head's zero-shot decoder (label set as state), or None."""
        found = [layer for layer in self.head._flatten_layers(include_self=False)
                 if hasattr(layer, "set_label_vectors")]
        return found[0] if found else None

    def set_labels(self, class_names, label_vectors, thresholds=None):
        """A zero-shot model's label set: ``class_names`` (M unique names) and their word
        vectors ``label_vectors [M, d_w]`` (``keras_mld.zsl.label_vectors``), with
        ``thresholds`` (default 0.5). No re-build: the state is assigned, the compiled
        functions are re-traced (and ``compile()``'s automatic metrics re-sized) on their
        next use. Switch between seen, unseen and seen + unseen labels this way."""
        decoder = self.zero_shot_decoder
        if decoder is None or getattr(decoder, "label_capacity", None) is None:
            raise ValueError("set_labels: only for zero-shot models (keras_mld.build(..., "
                             "head='mldecoder', query_type='word', word_dim=d_w))")
        names = check_class_names(class_names)
        v = np.asarray(label_vectors, dtype="float32") if not isinstance(
            label_vectors, (str, bytes)) else None
        if v is None or v.ndim != 2 or v.shape[0] != len(names):
            raise ValueError(f"label_vectors: expected [M={len(names)}, word_dim="
                             f"{decoder.word_dim}] (one row per class name), got "
                             f"{None if v is None else v.shape}")
        thresholds = check_thresholds(thresholds, names)
        decoder.set_label_vectors(v)
        self._class_names, self._thresholds = tuple(names), tuple(thresholds)
        self.train_function = self.test_function = self.predict_function = None
        if self.compiled and getattr(self, "_auto_metrics", False):
            kwargs = dict(getattr(self, "_compile_kwargs", {}))
            self.compile(optimizer=self.optimizer, loss=self.loss, metrics="auto", **kwargs)

    @property
    def label_vectors(self):
        """A zero-shot model's current label set ``[M, d_w]`` (numpy), else None."""
        decoder = self.zero_shot_decoder
        if decoder is None or getattr(decoder, "label_capacity", None) is None:
            return None
        return np.asarray(keras.ops.convert_to_numpy(decoder.label_set))[: decoder.num_labels]

    def get_layer(self, name=None, index=None):
        """As ``keras.Model.get_layer``; a name not found at the top level is looked up
        in ``head``, then ``preprocessor`` (e.g. ``get_layer("ml_decoder")``)."""
        try:
            return super().get_layer(name, index)
        except ValueError:
            if name is None:
                raise
            if name == "normalization":
                return self.preprocessor.normalization
            return self.head.get_layer(name)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "head": keras.saving.serialize_keras_object(self.head),
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "class_names": self.class_names, "thresholds": self.thresholds,
                "task": self.task}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "head", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # ------------------------------------------------------------------ training
    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """``keras.Model.compile`` with the papers' defaults for every ``"auto"`` argument.

        - ``optimizer``: the official ML-Decoder optimizer (``train.py``: ``torch.optim.Adam``
          over ``add_weight_decay`` groups):
          :class:`~keras_mld.training.torch_optimizers.TorchAdam`, learning rate 1e-4,
          coupled L2 weight decay 1e-4 (added to the gradient), epsilon 1e-8; biases,
          normalisation and other 1-D variables get no decay. (The official run also
          cycles the learning rate and beta1 with OneCycle: ``keras_mld.training.fit``
          with the ``mldecoder_coco`` recipe does that.)
        - ``loss``: multi-label: :class:`~keras_mld.losses.AsymmetricLoss` with
          ``gamma_neg=4, gamma_pos=0, clip=0.05`` (Ridnik et al. 2021, ASL, eq. 6 and
          section 4); single-label: softmax cross-entropy on integer class ids;
        - ``metrics``: multi-label: the exact streaming mAP
          (:class:`~keras_mld.metrics.MeanAveragePrecision`, ``mAP``; it holds at most
          ``8e6 / N`` samples, capped to 50 000: give your own for a larger validation
          set); single-label: ``accuracy``.

        Every argument, and any other ``keras.Model.compile`` argument, can be given.
        """
        if isinstance(optimizer, str) and optimizer == "auto":
            from keras_mld.training.weight_decay import configure_weight_decay

            from keras_mld.training.torch_optimizers import TorchAdam

            optimizer = TorchAdam(learning_rate=DEFAULT_LR, weight_decay=DEFAULT_WEIGHT_DECAY)
            configure_weight_decay(optimizer, self)
        if isinstance(loss, str) and loss == "auto":
            if self.task == "multilabel":
                from keras_mld.losses import AsymmetricLoss

                loss = AsymmetricLoss(**DEFAULT_ASL)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._auto_metrics = isinstance(metrics, str) and metrics == "auto"
        self._compile_kwargs = dict(kwargs)
        if isinstance(metrics, str) and metrics == "auto":
            if self.task == "multilabel":
                from keras_mld.metrics import MeanAveragePrecision

                capacity = int(min(50_000, max(1024, MAP_BUFFER_FLOATS // self.num_classes)))
                metrics = [MeanAveragePrecision(self.num_classes, capacity=capacity, name="mAP")]
            else:
                metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded model as saved (Keras skips this for a custom ``compile``).

        Keras does not save ``exclude_from_weight_decay`` lists; the default exclusions
        are applied again when the saved optimizer decays weights (AdamW, TorchAdam,
        TorchSGD)."""
        _register_compile_objects()
        config = keras.saving.deserialize_keras_object(config)
        optimizer = config.get("optimizer")
        self.compile(**config)
        decays = isinstance(optimizer, keras.optimizers.AdamW) or getattr(optimizer, "l2", 0)
        if decays and not optimizer.built:
            from keras_mld.training.weight_decay import configure_weight_decay

            configure_weight_decay(optimizer, self)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ inference
    def scores(self, logits):
        """Logits -> scores as float32 numpy (:func:`keras_mld.metadata.scores_from_logits`:
        sigmoid, or softmax over the classes for single-label)."""
        out = scores_from_logits(keras.ops.convert_to_tensor(logits, "float32"), self.task)
        return np.asarray(keras.ops.convert_to_numpy(out), np.float32)

    def _feeds(self, images):
        if not isinstance(self.input, dict):
            return images
        feeds = {IMAGES_INPUT: images}
        for t in self.inputs:
            if t.name == KNOWN_LABELS_INPUT:  # every label unknown (-1): C-Tran's inference
                feeds[t.name] = np.full((images.shape[0], self.num_classes), -1.0, "float32")
            elif t.name != IMAGES_INPUT:
                raise ValueError(f"images: this model also needs the input {t.name!r}; call "
                                 "it directly with a dict of inputs")
        return feeds

    def predict_scores(self, images, batch_size=32, max_request_bytes=MAX_REQUEST_BYTES):
        """Scores ``[B, N]`` (float32) of ``images`` (see :meth:`predict_labels`)."""
        batches = image_batches(images, self.preprocessor, batch_size, max_request_bytes)
        out = [self.scores(self(self._feeds(b), training=False)) for b in batches]
        if not out:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(out)

    def predict_labels(self, images, top_k=5, thresholds=None, batch_size=32,
                       max_request_bytes=MAX_REQUEST_BYTES):
        """Names and scores per image: those at or above their class threshold, and the top-k.

        Args:
            images: a batch ``[B, H, W, 3]`` (uint8 or float RGB in [0, 255]), or a list
                whose items are image files (paths), encoded bytes (JPEG/PNG/GIF/BMP) or
                arrays ``[H, W, 3]``, of any sizes and formats. Files and bytes are decoded
                and resized with :func:`keras_mld.data.image.decode_and_resize`, as the
                exported ``predict_images`` signature does.
            top_k: number of best classes in ``"top_k"`` (capped at N).
            thresholds: override of the model's ``thresholds`` (same forms).
            max_request_bytes: an image file or bytes larger than this is refused before
                it is read (default 32 MiB, as the exported ``predict_images`` bounds a
                request; None: no limit).

        Returns:
            one dict per image: ``{"labels": [(name, score), ...], "top_k": [(name,
            score), ...]}``, both best first (ties: the lower class index first); ``labels``
            holds every class whose score is ``>=`` its threshold.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
        t = np.asarray(self.thresholds if thresholds is None
                       else check_thresholds(thresholds, self.class_names), np.float32)
        scores = self.predict_scores(images, batch_size, max_request_bytes)
        names, k = self.class_names, min(int(top_k), self.num_classes)
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")
            out.append({"labels": [(names[i], float(row[i])) for i in order if row[i] >= t[i]],
                        "top_k": [(names[i], float(row[i])) for i in order[:k]]})
        return out

    def tune_thresholds(self, data, labels=None, grid=None, batch_size=32):
        """Per-class thresholds maximising each class's F1 on held-out ``data``; stored in
        ``self.thresholds`` and returned.

        ``data``: a ``tf.data.Dataset`` or iterable of ``(images, labels)`` batches, or an
        images batch with ``labels`` ``[B, N]`` (1 positive, 0 negative, -1 ignored).
        :func:`keras_mld.metrics.tune_thresholds` does the search on the scores; a class
        without a positive keeps 0.5. Use a split the model was not trained on.
        """
        from keras_mld.metrics import tune_thresholds

        if self.task != "multilabel":
            raise ValueError(f"tune_thresholds: per-class thresholds are for multi-label "
                             f"models; this model's task is {self.task!r}")
        if labels is not None:
            y, p = np.asarray(labels), self.predict_scores(data, batch_size)
        else:
            ys, ps = [], []
            for batch in data:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError("data: expected (images, labels) batches, or images "
                                     "with labels=")
                ps.append(self.scores(self(self._feeds(batch[0]), training=False)))
                ys.append(np.asarray(batch[1]))
            y, p = np.concatenate(ys), np.concatenate(ps)
        t = np.clip(tune_thresholds(y, p, grid=grid, default=0.5), 0.0, 1.0)
        self.thresholds = t.tolist()
        return np.asarray(self.thresholds)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A classifier from a preset: a name from :func:`keras_mld.list_presets` (a recipe:
        architecture and hyper-parameters, ``kwargs`` passed to :func:`keras_mld.build`) or
        a folder written by :meth:`save_to_preset` (weights included)."""
        return load_preset(cls, preset, **kwargs)

    def save_to_preset(self, preset_dir, recipe=None, validation=None, overwrite=False):
        """Writes a preset folder (config, weights, class names, thresholds, ``recipe``, the
        keras-mld version and the ``validation`` figures), atomically."""
        return save_preset(self, preset_dir, recipe=recipe, validation=validation,
                           overwrite=overwrite)


def _register_compile_objects():
    """Imports what a saved compile config can name (keras-mld's losses, metrics and, on
    TensorFlow, the OneCycle schedule), registering them with Keras' serialization."""
    import keras_mld.losses  # noqa: F401
    import keras_mld.metrics  # noqa: F401
    import keras_mld.training.torch_optimizers  # noqa: F401

    if keras.backend.backend() == "tensorflow":
        import keras_mld.training.schedules  # noqa: F401


def _static_size(backbone):
    shape = backbone.inputs[0].shape if backbone.inputs else None
    if shape is None or len(shape) != 4 or None in tuple(shape[1:3]):
        return None
    return (int(shape[1]), int(shape[2]))
