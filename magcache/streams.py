"""A hidden state of one stream (a tensor [B, tokens, C]) or of several streams that run through the
blocks together and are skipped together (a tuple of such tensors: LTX-2's video and audio).

Every operation the cache does on a hidden state or a residual goes through here, so one stream and
several are the same code. Batch rows (dim 0) are the CFG chunks in every stream alike."""
from __future__ import annotations

from typing import Union

import torch

Hidden = Union[torch.Tensor, tuple]


def _map(f, *xs):
    if isinstance(xs[0], tuple):
        return tuple(f(*parts) for parts in zip(*xs))
    return f(*xs)


def parts(x: Hidden) -> tuple:
    """The streams, as a tuple (one stream: a 1-tuple)."""
    return x if isinstance(x, tuple) else (x,)


def batch(x: Hidden) -> int:
    """Batch rows; every stream must have the same (checked by `tokens`)."""
    return parts(x)[0].shape[0]


def tokens(x: Hidden):
    """Token counts: an int for one stream, a tuple for several; None if the streams are not
    [B, tokens, ...] tensors with one batch size (then no residual is taken or applied)."""
    ps = parts(x)
    if not ps or not all(isinstance(p, torch.Tensor) and p.dim() >= 2 for p in ps):
        return None
    if len({p.shape[0] for p in ps}) != 1:
        return None
    counts = tuple(p.shape[1] for p in ps)
    return counts if isinstance(x, tuple) else counts[0]


def clone(x: Hidden) -> Hidden:
    """A contiguous copy (blocks update their input in place: Flux's img += ...)."""
    return _map(lambda t: t.clone(memory_format=torch.contiguous_format), x)


def sub(a: Hidden, b: Hidden) -> Hidden:
    return _map(torch.sub, a, b)


def add(a: Hidden, b: Hidden) -> Hidden:
    return _map(torch.add, a, b)


def rows(x: Hidden, start: int, stop: int) -> Hidden:
    """Batch rows start:stop of every stream (one CFG chunk)."""
    return _map(lambda t: t[start:stop], x)


def cat_rows(xs: list) -> Hidden:
    """The chunks stacked back along the batch, stream by stream."""
    if len(xs) == 1:
        return xs[0]
    if isinstance(xs[0], tuple):
        return tuple(torch.cat(p) for p in zip(*xs))
    return torch.cat(xs)


def same_layout(a: Hidden, b: Hidden) -> bool:
    """Same number of streams and, per stream, the same shape, dtype and device: `a` can be added to
    `b` without broadcasting."""
    pa, pb = parts(a), parts(b)
    return isinstance(a, tuple) == isinstance(b, tuple) and len(pa) == len(pb) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.device == y.device for x, y in zip(pa, pb))


def detach_float(x: Hidden) -> Hidden:
    return _map(lambda t: t.detach().float(), x)


def device(x: Hidden) -> torch.device:
    return parts(x)[0].device
