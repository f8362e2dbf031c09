"""Record the operations a model really runs, and follow dependencies through them.

:func:`record` runs the model once on a real probe tensor under
``make_fx(functionalize(...))``: every aten operation the forward pass executes is
recorded in order, at concrete sizes, so shape reads (``x.shape[2:]``), Python control
flow and run-time type checks behave exactly as at inference, and in-place updates and
views become plain functional operations. Global module hooks note the path of the
module each operation ran in (kept in the node's ``meta["custom"]``) and which modules
ran at all; the node's stack trace gives the calling source line.

:func:`propagate` interprets the recorded graph on a *second*, different random input,
running the real operations next to the dependency rules of :mod:`.rules`, and compares
the graph's output with the model's own output on that input: a graph that does not
reproduce the model (data-dependent control flow, computation outside torch) is an
:class:`~.refusals.UnsupportedOperationError`, never an answer.

torch is imported here because this module runs models; no Qt, no napari.
"""

from __future__ import annotations

import logging
import operator
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import fx

from .intervals import Dep, input_dep
from .refusals import (
    AnalysisTimeoutError,
    ModelRunError,
    Refusal,
    UnsupportedOperationError,
)
from .rules import RULES

__all__ = ["Recording", "record", "propagate", "AxisResult"]

_TRAIN_MODE_CLASSES = ("BatchNorm", "SyncBatchNorm", "Dropout", "AlphaDropout", "InstanceNorm")


@dataclass
class Recording:
    """One forward pass of a model, recorded at the aten level.

    Attributes
    ----------
    gm : torch.fx.GraphModule
        The functional aten graph, replayable on inputs of ``shape``.
    shape : tuple of int
        Input shape ``(1, C, *spatial)`` it was recorded at.
    modules_run : dict of str to str
        Path -> class name of every module whose forward ran.
    train_mode : list of (str, str)
        ``(path, class)`` of batch-norm or dropout modules in train mode that ran.
    """

    gm: Any
    shape: tuple[int, ...]
    modules_run: dict[str, str]
    train_mode: list[tuple[str, str]]


def _class_name(mod: Any) -> str:
    return getattr(mod, "original_name", None) or type(mod).__name__


def record(
    model: Any, shape: tuple[int, ...], dtype: Any, seed: int = 0, stack_traces: bool = False
) -> Recording:
    """Record the aten graph of ``model`` on a random input of ``shape``.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        The model, on the CPU; modules in train mode are noted, then run in eval mode.
    shape : tuple of int
        ``(1, in_channels, *spatial)`` in pixels.
    dtype : torch.dtype
        Input dtype (the model's parameter dtype).
    seed : int
        Seed of the random normal probe.
    stack_traces : bool
        Keep the Python stack of every operation (for messages; tracing takes longer).

    Returns
    -------
    Recording

    Raises
    ------
    ModelRunError
        If the model does not run at this shape (the message quotes its error).
    TypeError
        If the model does not return one tensor.
    """
    import torch.fx.traceback as fxt
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    paths = {id(m): (p, _class_name(m)) for p, m in model.named_modules()}
    training = {p for p, m in model.named_modules() if getattr(m, "training", False)}
    stack: list[tuple[str, str]] = []
    ran: dict[str, str] = {}

    def _set() -> None:
        path, cls = stack[-1] if stack else ("", "")
        fxt.current_meta["custom"] = {"module": path, "class": cls}

    def pre(mod: Any, args: Any) -> None:
        hit = paths.get(id(mod))
        if hit is not None:
            stack.append(hit)
            ran[hit[0]] = hit[1]
            _set()

    def post(mod: Any, args: Any, out: Any) -> None:
        if paths.get(id(mod)) is not None and stack:
            stack.pop()
            _set()

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the model returned {type(out).__name__}; napari-seamless needs a forward "
                "that returns one tensor (N, classes, *spatial): pick the output with "
                "load_model(..., output=INDEX_OR_KEY)"
            )
        return out

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    was = {p: m.training for p, m in model.named_modules()}
    model.eval()
    h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = torch.nn.modules.module.register_module_forward_hook(post)
    try:
        with fxt.preserve_node_meta(), torch.no_grad():
            try:  # shapes only: no arithmetic, no memory, whatever the model computes
                quiet = logging.getLogger("torch._subclasses.fake_tensor")
                level = quiet.level
                quiet.setLevel(logging.CRITICAL)  # a failure here is expected and handled
                gm = make_fx(
                    functionalize(forward),
                    tracing_mode="fake",
                    record_stack_traces=stack_traces,
                    _allow_non_fake_inputs=True,
                )(x)
                quiet.setLevel(level)
            except TypeError:
                quiet.setLevel(level)
                raise
            except Exception:  # noqa: BLE001 - value-dependent code: record real values
                quiet.setLevel(level)
                stack.clear()
                ran.clear()
                gm = make_fx(
                    functionalize(forward), tracing_mode="real", record_stack_traces=stack_traces
                )(x)
    except TypeError:
        raise
    except (RuntimeError, ValueError, IndexError, AssertionError, NotImplementedError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "data-dependent" in str(err) or "_local_scalar_dense" in str(err):
            raise UnsupportedOperationError(
                "the model reads image values in Python (float(x), x.item(), `if x > ...`), so "
                "what it computes depends on the input's values and its dependencies cannot "
                "be followed"
            ) from None
        raise ModelRunError(
            f"the model does not run on an input of shape {tuple(shape)} ({first})"
        ) from None
    finally:
        h1.remove()
        h2.remove()
        fxt.current_meta.pop("custom", None)
        for p, m in model.named_modules():
            if p in was:
                m.training = was[p]
    train_mode = [
        (p, c) for p, c in ran.items() if p in training and c.startswith(_TRAIN_MODE_CLASSES)
    ]
    return Recording(gm, tuple(shape), ran, train_mode)


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def source_of(node: Any) -> str:
    """``file:line`` of the innermost call outside torch's internals that recorded ``node``.

    Frames in the model's own code (a user's file, smp, MONAI, ...) win; else the
    innermost frame in ``torch/nn/modules`` (a built-in layer).
    """
    trace = node.meta.get("stack_trace") or ""
    frames = _FRAME.findall(trace)
    layer = ""
    for path, line in reversed(frames):
        short = "/".join(path.split("/")[-2:])
        if "napari_seamless/analysis" in path:
            continue
        if "/torch/" not in path:
            return f"{short}:{line}"
        if not layer and "/torch/nn/modules/" in path:
            layer = f"{short}:{line}"
    return layer


@dataclass
class AxisResult:
    """What one propagation along one axis found.

    Attributes
    ----------
    lo, hi : torch.Tensor, float64, shape (n,)
        Input interval of every output index along the axis.
    strides : set of Fraction
        Lattice steps of every feature map along the axis.
    convs : list of (Fraction, int, int)
        ``(input stride, kernel, dilation)`` of every convolution along the axis (Eq. 1).
    refusals : list of Refusal
    widths : list of (node, float)
        Widest dependency interval of each value, in graph order (for diagnostics).
    resampled_by_size : bool
        Some resampling took its output size from another tensor's size (checked by a
        second probe length).
    """

    lo: Any
    hi: Any
    strides: set = field(default_factory=set)
    convs: list = field(default_factory=list)
    refusals: list = field(default_factory=list)
    widths: list = field(default_factory=list)
    resampled_by_size: bool = False


class _Propagator(fx.Interpreter):
    def __init__(self, gm: Any, dim: int, deadline: float, guess_path: Any) -> None:
        super().__init__(gm)
        self.dim = dim
        self.deadline = deadline
        self.deps: dict[Any, Any] = {}
        self.out_dep: Any = None
        self.fake: set[Any] = set()
        self.result = AxisResult(None, None)
        self.guess_path = guess_path
        self._refused: set[tuple[str, str]] = set()

    # ---- context for the rules
    def module_class(self, n: Any) -> str:
        return (n.meta.get("custom") or {}).get("class", "") if n is not None else ""

    def _where(self, n: Any) -> tuple[str, str, str, str]:
        aten = (
            n.target.overloadpacket.__name__
            if hasattr(n.target, "overloadpacket")
            else str(n.target)
        )
        custom = n.meta.get("custom") or {}
        path, cls = custom.get("module", ""), custom.get("class", "")
        if not path:  # the model's own forward, or inside TorchScript: guess from the layers
            guess = self.guess_path(aten)
            if guess[0]:
                path, cls = guess
        return path, cls or f"aten.{aten}", f"aten.{aten}", source_of(n)

    def refuse(self, n: Any, reason: str) -> None:
        path, cls, aten, src = self._where(n)
        if (path, reason) not in self._refused:
            self._refused.add((path, reason))
            self.result.refusals.append(Refusal(path, cls, reason, aten, src))

    def unsupported(self, n: Any, what: str) -> None:
        if n is None:
            raise UnsupportedOperationError(f"the halo analysis cannot follow {what}")
        path, cls, aten, src = self._where(n)
        at = f" in {cls} at '{path}'" if path else ""
        called = f" (called at {src})" if src else ""
        raise UnsupportedOperationError(f"{aten}{at}{called}: {what}")

    def note_stride(self, s: Fraction) -> None:
        self.result.strides.add(Fraction(s))

    def note_conv(self, stride_in: Fraction, k: int, d: int) -> None:
        self.result.convs.append((stride_in, k, d))

    def note_resample(self, by_size: bool) -> None:
        self.result.resampled_by_size |= by_size

    # ---- the interpreter
    def run_node(self, n: Any) -> Any:
        """Shapes only where a value depends on the image; real values for constants."""
        if time.perf_counter() > self.deadline:
            raise AnalysisTimeoutError("deadline")
        inputs = n.all_input_nodes
        if n.op == "call_function" and any(a in self.deps for a in inputs) and "val" in n.meta:
            out = n.meta["val"]  # shapes and dtypes from the recording: no arithmetic
            self.fake.add(n)
        elif n.op == "call_function" and any(a in self.fake for a in inputs):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            args, kwargs = _realise((args, kwargs))
            out = self.call_function(n.target, args, kwargs)
        else:
            out = super().run_node(n)
        if n.op == "placeholder":
            dep = input_dep(tuple(out.shape), self.dim)
        elif n.op == "call_function":
            dep = self._call(n, out)
        elif n.op == "output":
            arg = n.args[0]
            arg = arg[0] if isinstance(arg, (list, tuple)) else arg
            self.out_dep = self.deps.get(arg) if isinstance(arg, fx.Node) else None
            dep = None
        else:
            dep = None
        if dep is not None:
            self.deps[n] = dep
            self._width(n, dep)
        for old in self.user_to_last_uses.get(n, []):
            self.deps.pop(old, None)
            self.fake.discard(old)
        return out

    def _width(self, n: Any, dep: Any) -> None:
        d = dep[0] if isinstance(dep, list) else dep
        if isinstance(d, Dep) and d.lo.numel():
            lo, hi = torch.broadcast_tensors(d.lo, d.hi)
            step = max(1, lo.numel() // 4096)
            lo, hi = lo.reshape(-1)[::step], hi.reshape(-1)[::step]
            w = torch.where(torch.isfinite(lo) & torch.isfinite(hi), hi - lo, 0.0)
            self.result.widths.append((n, float(w.max())))

    def _dep_of(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.deps.get(a)
        if isinstance(a, (list, tuple)):
            return [self._dep_of(x) for x in a]
        if isinstance(a, dict):
            return {k: self._dep_of(v) for k, v in a.items()}
        return None

    def _call(self, n: Any, out: Any) -> Any:
        if n.target is operator.getitem:
            base = self.deps.get(n.args[0])
            if isinstance(base, list):
                return base[n.args[1]]
            return None
        if not hasattr(n.target, "overloadpacket"):
            self.unsupported(n, f"the Python function {n.target!r} in the recorded graph")
        name = n.target.overloadpacket.__name__
        fn = RULES.get(name)
        if fn is None and name.endswith("_copy") and name not in ("_to_copy",):
            fn = RULES.get(name[: -len("_copy")])
        deps = self._dep_of(list(n.args))
        kdeps = self._dep_of(dict(n.kwargs))
        if fn is None:
            if not any(_has_dep(d) for d in deps) and not any(_has_dep(d) for d in kdeps.values()):
                return None  # an operation on constants only: no dependency to follow
            self.unsupported(n, "the halo analysis has no rule for this operation")
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        try:
            return fn(self, n, args, kwargs, deps, out)
        except (UnsupportedOperationError, AnalysisTimeoutError):
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            self.unsupported(n, f"its dependency rule failed ({type(err).__name__}: {err})")


def _realise(obj: Any) -> Any:
    """Replace shape-only (fake) tensors by zeros of their shape and dtype."""
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(obj, FakeTensor):
        return torch.zeros(tuple(obj.shape), dtype=obj.dtype)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_realise(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _realise(v) for k, v in obj.items()}
    return obj


def check_recording(rec: Recording, model: Any, seed: int = 1) -> None:
    """The recorded graph must reproduce the model's output on a second, different input.

    Raises
    ------
    UnsupportedOperationError
        If it does not: the model branches on its input's values or computes outside torch.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = (torch.randn(rec.shape, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x)
            got = rec.gm(x)
    finally:
        model.train(was)
    got = got[0] if isinstance(got, (list, tuple)) else got
    if not isinstance(ref, torch.Tensor) or ref.shape != got.shape:
        raise UnsupportedOperationError(
            "the recorded graph does not reproduce the model's output shape on a second "
            "input; the model's computation depends on the input values"
        )
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((ref.double() - got.double()).abs().max()) if ref.numel() else 0.0
    if not diff <= 1e-4 * max(scale, 1e-6):
        raise UnsupportedOperationError(
            "the recorded graph does not reproduce the model's output on a second input "
            f"(max |difference| {diff:.3g}): the model branches on the input's values or "
            "computes outside torch, so its dependencies cannot be followed"
        )


def _has_dep(d: Any) -> bool:
    if isinstance(d, Dep):
        return True
    if isinstance(d, (list, tuple)):
        return any(_has_dep(x) for x in d)
    if isinstance(d, dict):
        return any(_has_dep(x) for x in d.values())
    return False


def propagate(
    rec: Recording,
    model: Any,
    axis: int,
    deadline: float,
    guess_path: Any,
) -> AxisResult:
    """Follow dependency intervals through ``rec`` along spatial ``axis``.

    Only shapes are used; :func:`check_recording` checks the graph against the model.

    Parameters
    ----------
    rec : Recording
        From :func:`record`.
    model : torch.nn.Module
        The model the recording came from (its parameter dtype).
    axis : int
        Spatial axis (0-based among the spatial axes).
    deadline : float
        ``time.perf_counter()`` value past which :class:`AnalysisTimeoutError` is raised.
    guess_path : callable
        ``aten name -> (path, class)`` for operations without a recorded module.

    Returns
    -------
    AxisResult

    Raises
    ------
    UnsupportedOperationError
        For an operation without a rule.
    AnalysisTimeoutError
        Past the deadline.
    """
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = torch.zeros(rec.shape, dtype=dtype)
    prop = _Propagator(rec.gm, 2 + axis, deadline, guess_path)
    with torch.no_grad():
        prop.run(x)
    dep = prop.out_dep
    out_shape = dep.shape if isinstance(dep, Dep) else None
    res = prop.result
    if res.refusals:
        return res
    if not isinstance(dep, Dep):
        raise UnsupportedOperationError("the model's output does not depend on its input")
    if tuple(out_shape[2:]) != tuple(rec.shape[2:]):
        raise ModelRunError(
            f"the model changes the image size (input {tuple(rec.shape[2:])} gives output "
            f"{tuple(out_shape[2:])}); napari-seamless needs an output of the input's size "
            "(convolutions with SAME padding)"
        )
    other = tuple(d for d in range(len(dep.shape)) if d != 2 + axis)
    lo, hi = dep.full(0), dep.full(1)
    res.lo = lo.amin(dim=other) if other else lo
    res.hi = hi.amax(dim=other) if other else hi
    return res
