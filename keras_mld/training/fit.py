"""The training strategy of Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5 and ML-Decoder
(Ridnik et al., arXiv:2111.12933) appendix C, wired into ``keras.Model.fit``.

``fit(model, train_data, validation_data, recipe, run_dir)``:

- optimizer (``adam`` | ``adamw`` | ``sgd``) with decoupled weight decay excluding biases
  and normalisation variables (:mod:`.weight_decay`), optional EMA of the weights
  (``use_ema=True``), learning-rate schedule (``onecycle`` | ``cosine`` | ``constant``);
  ``lr: "auto"`` runs :func:`.lr_range_test` first (the result is stored in
  ``run_dir/recipe.json`` and reused when the run resumes);
- SAM (:class:`.SAMModel`) when ``sam_rho`` is set; compiled with ``jit_compile``
  (``"auto"``, the default: XLA when TensorFlow sees a GPU, not on a CPU, where XLA ran
  EfficientNetV2 three times and dropout's random draws ~75 times slower than TensorFlow's
  own kernels: BENCHMARKS.md, ``benchmarks/dropout_xla.py``; turned off with a warning under a multi-replica ``tf.distribute`` strategy: Keras compiles the
  whole ``strategy.run`` step, which XLA cannot place across devices);
- callbacks, in this order: :class:`.EMAEvaluation` (``val_ema_*``), the papers' early
  stopping, atomic best-model checkpoint ``run_dir/best.keras``, ``CSVLogger``
  (``run_dir/log.csv``, appended on resume), ``TensorBoard`` (``run_dir/tensorboard``;
  recipe ``tensorboard: "auto"`` enables it when the ``tensorboard`` package is installed),
  ``TerminateOnNaN``, ``BackupAndRestore`` (``run_dir/backup``: a killed run started
  again with the same arguments resumes at the last finished epoch, the training data's
  per-epoch shuffles replayed first so that it ends as the uninterrupted run), then the caller's
  ``callbacks`` (they run after the backup is written). Keras progress bars (``verbose``).
- the final inner model is written atomically to ``run_dir/final.keras``. It holds what
  ``model`` holds after Keras' ``fit``: with EMA, Keras ends ``fit`` by copying the EMA
  weights into the model (``optimizer.finalize_variable_values``), unless early stopping
  with ``restore_best_weights`` put the best epoch's weights back afterwards.

Returns the ``keras.callbacks.History`` of this call (after a resume: the remaining
epochs only; ``log.csv`` has them all).
"""
import contextlib
import importlib.util
import os
import warnings

import keras
import tensorflow as tf

from keras_mld.atomic import save_model, write_json
from keras_mld.training.callbacks import BestModelCheckpoint, EMAEarlyStopping, EMAEvaluation
from keras_mld.training.data_order import replay_data_order, symbolic_build_from_spec
from keras_mld.training.ema import ModelStateEMA
from keras_mld.training.freeze import freeze_layers
from keras_mld.training.lr_finder import lr_range_test
from keras_mld.training.plateau import TorchReduceLROnPlateau
from keras_mld.training.precision import check_policy, resolve_mixed_precision
from keras_mld.training.query2label_stop import Query2LabelEarlyStopping
from keras_mld.training.sam import SAMModel
from keras_mld.training.schedules import OneCycle, OneCycleMomentum
from keras_mld.training.torch_optimizers import TorchAdam, TorchSGD
from keras_mld.training.weight_decay import configure_weight_decay
from keras_mld.untrusted import MAX_STATE_BYTES, finite_number, read_json

__all__ = ["DEFAULT_RECIPE", "fit", "make_loss", "make_optimizer", "onecycle_warmup_epochs",
           "resolve_jit_compile"]

#: ML-Decoder MS-COCO recipe (Ridnik et al., arXiv:2111.12933, appendix C), plus OneCycle
#: and early stopping.
DEFAULT_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "epochs": 40,
    "sam_rho": None, "ema_momentum": 0.9997,
    "schedule": "onecycle", "pct_start": 0.2, "div_factor": 25.0, "final_div_factor": 1e4,
    "loss": {"name": "asl", "gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05},
    "metrics": ["mAP"], "map_capacity": 50_000,
    "monitor": "val_mAP",
    "early_stopping": {"patience": 5, "smoothing": 0.8, "rule": "paper"},
    "jit_compile": "auto", "exclude_1d_from_decay": True,
    "lr_range": {"min_lr": 1e-7, "max_lr": 1.0, "num_steps": 100},
    "tensorboard": "auto",
    # PyTorch training semantics (defaults keep the Keras behaviour above)
    "epsilon": None, "beta_2": None, "cycle_momentum": False, "base_momentum": 0.85,
    "max_momentum": 0.95, "ema_mode": "optimizer", "bias_lr_factor": 1.0,
    "reduce_lr_on_plateau": None, "nbd": False, "sam_second_pass_state": False,
    # Query2Label's backbone (frozen BatchNorm, stem and first stage) and AdamW on everything
    "freeze_layers": None, "freeze_batchnorm": False, "decay_all_parameters": False,
    # None: the model's own dtype policy decides (Keras wraps a mixed_float16 model's
    # optimizer in a LossScaleOptimizer); "auto": mixed_float16 where a GPU is present
    "mixed_precision": None,
}

def resolve_jit_compile(value):
    """``jit_compile`` of a recipe: True, False, or ``"auto"`` = True where TensorFlow sees a
    GPU and False on a CPU (XLA:CPU runs depthwise convolutions and the random draws of
    dropout far slower than TensorFlow's kernels; measured in BENCHMARKS.md)."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    raise ValueError(f"fit: jit_compile must be True, False or 'auto', got {value!r}")


_LOSSES = {"asl": "AsymmetricLoss", "asl_single": "AsymmetricLossSingleLabel", "aam": "AAMLoss"}


def make_loss(spec):
    """Loss from a recipe entry: a ``keras.losses.Loss``, a name, or ``{"name": ..., **kw}``.

    Names: ``asl``, ``asl_single``, ``aam`` (keras_mld losses), ``bce`` / ``ce`` (Keras
    cross-entropies on logits), or any name ``keras.losses.get`` knows.
    """
    if isinstance(spec, keras.losses.Loss) or (callable(spec)
                                               and not isinstance(spec, (str, dict))):
        return spec
    kwargs = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = kwargs.pop("name", None)
    if name in _LOSSES:
        import keras_mld.losses as losses

        return getattr(losses, _LOSSES[name])(**kwargs)
    if name == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True, **kwargs)
    if name == "ce":
        return keras.losses.CategoricalCrossentropy(from_logits=True, **kwargs)
    if isinstance(name, str) and not kwargs:
        return keras.losses.get(name)
    raise ValueError(f"fit: loss must be a Loss, a name in {sorted(_LOSSES) + ['bce', 'ce']} "
                     f"or a dict with 'name', got {spec!r}")


def _make_metrics(recipe, model):
    out = []
    for m in recipe["metrics"]:
        if m == "mAP":
            from keras_mld.metrics import MeanAveragePrecision
            out.append(MeanAveragePrecision(num_classes=int(model.output_shape[-1]),
                                            capacity=recipe["map_capacity"], name="mAP"))
        else:
            out.append(m)
    return out


_TORCH = {"torch_adam": (TorchAdam, False), "torch_adamw": (TorchAdam, True),
          "torch_sgd": (TorchSGD, None)}


def _momentum(recipe, default, total_steps):
    if recipe.get("cycle_momentum"):
        if not total_steps:
            raise ValueError("fit: cycle_momentum needs the number of steps")
        return OneCycleMomentum(total_steps, pct_start=recipe["pct_start"],
                                base_momentum=recipe["base_momentum"],
                                max_momentum=recipe["max_momentum"])
    return default


def _make_torch_optimizer(recipe, learning_rate, total_steps):
    cls, decoupled = _TORCH[recipe["optimizer"]]
    wd = float(recipe["weight_decay"] or 0.0)
    kwargs = {"clipnorm": float(recipe["clipnorm"])} if recipe.get("clipnorm") else {}
    if cls is TorchSGD:
        return TorchSGD(learning_rate, momentum=_momentum(recipe, recipe.get("momentum", 0.9),
                                                          total_steps),
                        nesterov=recipe.get("nesterov", False), weight_decay=wd, **kwargs)
    return TorchAdam(learning_rate, beta_1=_momentum(recipe, 0.9, total_steps),
                     beta_2=recipe.get("beta_2") or 0.999,
                     epsilon=1e-8 if recipe.get("epsilon") is None else recipe["epsilon"],
                     weight_decay=wd, decoupled=decoupled, **kwargs)


def make_optimizer(recipe, learning_rate, total_steps=None):
    """Optimizer of ``recipe``: Keras' ``adam`` / ``adamw`` / ``sgd`` (decoupled weight
    decay, optional Keras EMA), or PyTorch's update rules ``torch_adam`` (coupled L2, as
    ``torch.optim.Adam(weight_decay=...)``), ``torch_adamw``, ``torch_sgd`` (coupled L2)
    with optional OneCycle momentum cycling (``cycle_momentum``; needs ``total_steps``)."""
    name = recipe["optimizer"]
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "sgd": keras.optimizers.SGD}
    if name in _TORCH:
        if recipe["ema_momentum"] and recipe.get("ema_mode", "optimizer") == "optimizer":
            raise ValueError(f"fit: optimizer {name!r} keeps no EMA; use ema_mode "
                             "'model_state' (or ema_momentum None)")
        return _make_torch_optimizer(recipe, learning_rate, total_steps)
    if name not in classes:
        raise ValueError(f"fit: optimizer must be one of {sorted(classes) + sorted(_TORCH)}, "
                         f"got {name!r}")
    if recipe.get("cycle_momentum"):
        raise ValueError(f"fit: cycle_momentum needs a torch_* optimizer, got {name!r}")
    kwargs = {"learning_rate": learning_rate, "weight_decay": recipe["weight_decay"] or None}
    if name != "sgd" and recipe.get("epsilon") is not None:
        kwargs["epsilon"] = float(recipe["epsilon"])
    if name == "sgd":
        kwargs.update(momentum=recipe.get("momentum", 0.9), nesterov=recipe.get("nesterov", False))
    if recipe["ema_momentum"] and recipe.get("ema_mode", "optimizer") == "optimizer":
        kwargs.update(use_ema=True, ema_momentum=float(recipe["ema_momentum"]))
    if recipe.get("clipnorm"):
        kwargs["clipnorm"] = float(recipe["clipnorm"])
    return classes[name](**kwargs)


def _steps_per_epoch(train_data, steps_per_epoch):
    if steps_per_epoch:
        return int(steps_per_epoch)
    if isinstance(train_data, tf.data.Dataset):
        n = int(train_data.cardinality())
        if n > 0:
            return n
    elif hasattr(train_data, "__len__"):
        return len(train_data)
    raise ValueError("fit: steps_per_epoch is required when the length of train_data is unknown")


def _schedule(recipe, lr, total_steps):
    name = recipe["schedule"]
    if name == "onecycle":
        return OneCycle(lr, total_steps, pct_start=recipe["pct_start"],
                        div_factor=recipe["div_factor"],
                        final_div_factor=recipe["final_div_factor"])
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, total_steps)
    if name in ("constant", None):
        return lr
    raise ValueError(f"fit: schedule must be 'onecycle', 'cosine' or 'constant', got {name!r}")


def _is_torch_bias(model):
    """Predicate on variables: PyTorch would name it ``.bias`` (a layer's ``bias`` and the
    offset ``beta`` of a normalisation layer, which is PyTorch's BatchNorm / LayerNorm
    ``bias``)."""
    from keras_mld.training.weight_decay import is_norm_layer

    betas = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if is_norm_layer(layer) and isinstance(getattr(layer, "beta", None), keras.Variable):
            betas.add(id(layer.beta))
    return lambda v: v.name.split("/")[-1].split(":")[0] == "bias" or id(v) in betas


def _nbd_multipliers(optimizer, model, excluded):
    """deep-object-reid's ``nbd`` parameter groups (``torchreid/optim/optimizer.py``,
    ``_build_optim``): ``.bias`` parameters 2x lr without decay, other 1-D parameters and
    norm weights 1x lr without decay, the rest 1x lr with decay. The decay exclusions are
    those of ``exclude_1d_from_decay``; this sets the bias factor."""
    if not hasattr(optimizer, "set_lr_multipliers"):
        raise ValueError("fit: nbd needs a torch_* optimizer")
    is_bias = _is_torch_bias(model)
    optimizer.set_lr_multipliers([(v, 2.0) for v in excluded if is_bias(v)])


def onecycle_warmup_epochs(recipe, steps):
    """The first epoch at whose end ``OneCycleLR``'s warm-up is over (deep-object-reid's
    ``OneCycleLR.warmup_finished``: ``last_epoch >= pct_start * total_steps - 1``, read
    after the epoch's last batch, before the scheduler steps)."""
    if recipe["schedule"] != "onecycle":
        raise ValueError("fit: early_stopping after_warmup needs schedule 'onecycle', got "
                         f"{recipe['schedule']!r}")
    end_step = float(recipe["pct_start"] * (recipe["epochs"] * steps)) - 1  # as torch
    epoch = 1
    while steps * epoch - 1 < end_step:
        epoch += 1
    return epoch


def _use_tensorboard(flag):
    """``"auto"``: on when the ``tensorboard`` package (needed by ``tf.summary``) is installed."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if flag == "auto":
        if not installed:
            warnings.warn("fit: the tensorboard package is not installed; no TensorBoard logs")
        return installed
    if flag and not installed:
        raise ValueError("fit: tensorboard=True needs the tensorboard package "
                         "(pip install tensorboard)")
    return bool(flag)


def _resolve_recipe(recipe, run_dir, model, train_data, loss):
    unknown = set(recipe or {}) - set(DEFAULT_RECIPE) - {"momentum", "nesterov", "clipnorm"}
    if unknown:
        raise ValueError(f"fit: unknown recipe keys {sorted(unknown)}; accepted: "
                         f"{sorted(DEFAULT_RECIPE) + ['clipnorm', 'momentum', 'nesterov']}")
    r = {**DEFAULT_RECIPE, **(recipe or {})}
    saved_path = os.path.join(run_dir, "recipe.json")
    resuming = os.path.isdir(os.path.join(run_dir, "backup"))
    if r["lr"] == "auto":
        if resuming and os.path.exists(saved_path):  # untrusted: damaged -> ValueError
            saved = read_json(saved_path, "fit: resume", max_bytes=MAX_STATE_BYTES)
            if not isinstance(saved, dict) or "lr" not in saved:
                raise ValueError(f"fit: resume: {saved_path!r} has no 'lr' (delete the run "
                                 "folder's backup/ to start afresh)")
            r["lr"] = finite_number(saved["lr"], f"fit: resume: {saved_path!r}: lr")
        else:
            _, _, r["lr"] = lr_range_test(model, train_data, loss=loss, **r["lr_range"])
    if not isinstance(r["lr"], (int, float)) or not r["lr"] > 0:
        raise ValueError(f"fit: lr must be a float > 0 or 'auto', got {r['lr']!r}")
    serialisable = {k: v for k, v in r.items() if isinstance(v, (int, float, str, list, dict,
                                                                 type(None)))}
    write_json(saved_path, serialisable)
    return r


def fit(model, train_data, validation_data=None, recipe=None, run_dir="runs/default",
        callbacks=(), steps_per_epoch=None, validation_steps=None, verbose="auto"):
    """Train ``model`` (built, uncompiled) with ``recipe``; returns the ``History``.

    ``recipe`` keys (defaults in :data:`DEFAULT_RECIPE`): ``optimizer``, ``lr`` (float or
    ``"auto"``), ``weight_decay``, ``epochs``, ``sam_rho`` (None: no SAM),
    ``ema_momentum`` (None: no EMA), ``schedule``, ``pct_start``, ``div_factor``,
    ``final_div_factor``, ``loss``, ``metrics`` (``"mAP"`` = exact streaming mAP),
    ``map_capacity``, ``monitor`` (for early stopping and ``best.keras``; ``val_ema_mAP``
    selects the EMA weights), ``early_stopping`` (dict of :class:`EMAEarlyStopping`
    arguments, or None), ``jit_compile`` (True, False or ``"auto"``: see
    :func:`resolve_jit_compile`), ``exclude_1d_from_decay``, ``lr_range``,
    ``tensorboard``, and optionally ``momentum``/``nesterov`` (SGD), ``clipnorm``.

    PyTorch training semantics (docs/training.md): ``optimizer`` ``torch_adam`` (coupled
    L2, ``torch.optim.Adam(weight_decay=...)``), ``torch_adamw``, ``torch_sgd``;
    ``epsilon`` (Adam's; None: the optimizer's default, 1e-8 for ``torch_*``), ``beta_2``;
    ``cycle_momentum`` (OneCycleLR's beta1 / momentum cycling between ``max_momentum``
    and ``base_momentum``); ``bias_lr_factor`` (learning-rate factor of the biases, which
    are excluded from decay); ``ema_mode``: ``"optimizer"`` (Keras ``use_ema``) or
    ``"model_state"`` (:class:`~keras_mld.training.ema.ModelStateEMA`: the official
    ``ModelEma``, weights and BatchNorm statistics; written to ``run_dir/final_ema.keras``
    and available as ``history.ema``). ``monitor: val_max_mAP`` selects the better of the
    regular and the EMA model each epoch, as the official loops do.
    ``nbd``: deep-object-reid's parameter groups (PyTorch ``.bias`` parameters, i.e.
    biases and normalisation offsets ``beta``, at 2x lr; no decay on them, on 1-D
    parameters and norm weights). ``sam_second_pass_state``: SAM's second forward pass
    updates the BatchNorm moving statistics too (:class:`SAMModel` ``second_pass_state``).
    ``early_stopping: {..., after_warmup: true}``: epochs before the end of OneCycle's
    warm-up do not count towards the patience (deep-object-reid).
    ``reduce_lr_on_plateau``: None, or the arguments of
    :class:`~keras_mld.training.plateau.TorchReduceLROnPlateau` (PyTorch's rules; needs
    ``schedule: constant``). ``early_stopping: {rule: query2label, patience: 8}``:
    Query2Label's rule (:class:`~keras_mld.training.query2label_stop.Query2LabelEarlyStopping`,
    on ``val_mAP`` and ``val_ema_mAP``). ``freeze_layers`` (layer-name prefixes) and
    ``freeze_batchnorm``: :func:`~keras_mld.training.freeze.freeze_layers` before
    compiling (Query2Label's frozen BatchNorm, stem and first stage);
    ``decay_all_parameters``: decay every trainable variable, biases and normalisation
    included (``torch.optim.AdamW`` over all parameters, as Query2Label).
    ``mixed_precision`` (:func:`resolve_mixed_precision`): None, ``"auto"`` (``mixed_float16``
    with Keras' ``LossScaleOptimizer`` — dynamic loss scaling — where a GPU is present,
    float32 on a CPU), ``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``; the model
    must have been built with that policy (:func:`mixed_precision_scope`).
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError("fit: model must be a built keras.Model")
    os.makedirs(run_dir, exist_ok=True)
    loss = make_loss((recipe or {}).get("loss", DEFAULT_RECIPE["loss"]))
    r = _resolve_recipe(recipe, run_dir, model, train_data, loss)
    if r["ema_mode"] not in ("optimizer", "model_state"):
        raise ValueError(f"fit: ema_mode must be 'optimizer' or 'model_state', "
                         f"got {r['ema_mode']!r}")
    if r["monitor"].startswith(("val_ema_", "val_max_")) and not r["ema_momentum"]:
        raise ValueError(f"fit: monitor {r['monitor']!r} needs ema_momentum")
    policy = resolve_mixed_precision(r["mixed_precision"])
    check_policy(model, policy)
    steps = _steps_per_epoch(train_data, steps_per_epoch)
    strategy = getattr(model, "distribute_strategy", None)  # None: JAX backend
    jit = resolve_jit_compile(r["jit_compile"])
    if jit and strategy is not None and strategy.num_replicas_in_sync > 1:
        warnings.warn("fit: jit_compile disabled under a multi-replica tf.distribute strategy")
        jit = False
    if r["freeze_layers"] or r["freeze_batchnorm"]:
        freeze_layers(model, r["freeze_layers"] or (), batchnorm=r["freeze_batchnorm"])
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        total = r["epochs"] * steps
        optimizer = make_optimizer(r, _schedule(r, float(r["lr"]), total), total)
        if not isinstance(r["decay_all_parameters"], bool):
            raise ValueError("fit: decay_all_parameters must be True or False, got "
                             f"{r['decay_all_parameters']!r}")
        excluded = [] if r["decay_all_parameters"] else configure_weight_decay(
            optimizer, model, exclude_1d=r["exclude_1d_from_decay"])
        if r["nbd"]:
            if (r["bias_lr_factor"] != 1.0 or not r["exclude_1d_from_decay"]
                    or r["decay_all_parameters"]):
                raise ValueError("fit: nbd sets the bias lr factor (2) and the decay "
                                 "exclusions itself; leave bias_lr_factor 1, "
                                 "exclude_1d_from_decay true and decay_all_parameters false")
            _nbd_multipliers(optimizer, model, excluded)
        elif r["bias_lr_factor"] != 1.0:
            if not hasattr(optimizer, "set_lr_multipliers"):
                raise ValueError("fit: bias_lr_factor needs a torch_* optimizer")
            optimizer.set_lr_multipliers([(v, r["bias_lr_factor"]) for v in excluded
                                          if v.name.split("/")[-1].split(":")[0] == "bias"])
        if policy == "mixed_float16":  # dynamic loss scaling (the official GradScaler)
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        if r["sam_second_pass_state"] and not r["sam_rho"]:
            raise ValueError("fit: sam_second_pass_state needs sam_rho")
        train_model = SAMModel(model, rho=r["sam_rho"],
                               second_pass_state=bool(r["sam_second_pass_state"])) \
            if r["sam_rho"] else model
        train_model.compile(optimizer=optimizer, loss=loss, metrics=_make_metrics(r, model),
                            jit_compile=jit)
    monitor = r["monitor"]
    has_monitor = validation_data is not None or not monitor.startswith("val_")
    state = os.path.join(run_dir, "callback_state")
    ema = None
    if r["ema_momentum"] and r["ema_mode"] == "model_state":
        ema = ModelStateEMA(float(r["ema_momentum"]), model=model,
                            state_path=os.path.join(state, "ema.npz"))
    cbs = [ema] if ema is not None else []
    if r["ema_momentum"] and validation_data is not None:
        cbs.append(EMAEvaluation(validation_data, steps=validation_steps, ema=ema))
    stopping = dict(r["early_stopping"] or {})
    if stopping.get("rule") == "query2label" and validation_data is not None:
        stopping.pop("rule")
        if not r["ema_momentum"]:
            raise ValueError("fit: early_stopping rule 'query2label' needs ema_momentum")
        cbs.append(Query2LabelEarlyStopping(**stopping, state_path=os.path.join(
            state, "early_stopping.json")))
    elif stopping and stopping.get("rule") != "query2label" and has_monitor:
        if stopping.pop("after_warmup", False):
            stopping["warmup_epochs"] = onecycle_warmup_epochs(r, steps)
        cbs.append(EMAEarlyStopping(monitor=monitor, **stopping, ema=ema,
                                    state_path=os.path.join(state, "early_stopping.json")))
    if r["reduce_lr_on_plateau"] is not None:
        if r["schedule"] not in ("constant", None):
            raise ValueError("fit: reduce_lr_on_plateau needs schedule 'constant', got "
                             f"{r['schedule']!r}")
        cbs.append(TorchReduceLROnPlateau(**r["reduce_lr_on_plateau"]))
    if has_monitor:
        cbs.append(BestModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=monitor,
                                       model_to_save=model, ema=ema,
                                       state_path=os.path.join(state, "best.json")))
    cbs.append(keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=True))
    if _use_tensorboard(r["tensorboard"]):
        cbs.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"),
                                               write_graph=False, profile_batch=0))
    cbs.append(keras.callbacks.TerminateOnNaN())
    cbs.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),
                                                double_checkpoint=True))
    cbs.extend(callbacks)
    replay_data_order(train_data, os.path.join(run_dir, "backup"))
    with symbolic_build_from_spec(train_model):
        history = train_model.fit(train_data, validation_data=validation_data,
                                  epochs=r["epochs"], steps_per_epoch=steps_per_epoch,
                                  validation_steps=validation_steps, callbacks=cbs,
                                  verbose=verbose,
                                  shuffle=not isinstance(train_data, tf.data.Dataset))
    save_model(model, os.path.join(run_dir, "final.keras"))
    if ema is not None:
        with ema.swapped():
            save_model(model, os.path.join(run_dir, "final_ema.keras"))
    history.ema = ema
    return history
