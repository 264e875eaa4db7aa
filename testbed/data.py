"""The testbeds' data, drawn by code, and the checker defined with it. Everything here is ours.

Latents are drawn directly in the model's latent space (16 channels; there is no VAE): a latent
"pixel" is a 16-channel vector. Each class has its own colour (a fixed 16-channel vector) on a
fixed background vector; the checker finds the object (pixels far from the background) and asks
which class colour it is nearest to, and, for videos, whether it moved right.

- image: one square or disc of the class colour, random size and position, 16x16 latent.
- video: one square of the class colour moving right by 2 latent pixels per frame over 3 frames of
  12x12, from a random start that keeps it in frame. Every class moves the same way: with the
  direction tied to the class (right, down, left, up) WanModel at dim 128 learned coherent squares
  in 26 min of training but not their direction (1/16 right); moving all one way it learned both
  (README, Quality).

Conditioning: each class is a fixed random "prompt" (TOKENS x 4096, the text width ComfyUI's
detection of these classes expects) and pooled vector; the empty prompt (class dropout, and the
negative for CFG) is zeros. Fixed seeds everywhere."""
from __future__ import annotations

import torch

CHANNELS = 16
CLASSES = 8
TOKENS = 4
TEXT_DIM = 4096
POOLED_DIM = 768
IMAGE_SIZE = 16
VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SQUARE, VIDEO_SPEED = 3, 12, 4, 2
DIRECTION = (0, 1)  # (dy, dx) per frame: right

# RGB shown for each class colour and the background (the picture only; the checker never uses it).
RGB = torch.tensor([[230, 40, 40], [40, 170, 60], [40, 80, 230], [240, 200, 30], [200, 60, 200],
                    [30, 200, 210], [250, 130, 20], [245, 245, 245]], dtype=torch.float32) / 255
RGB_BACKGROUND = torch.tensor([25, 25, 35], dtype=torch.float32) / 255


def _palette():
    g = torch.Generator().manual_seed(1234)
    colours = torch.randn(CLASSES, CHANNELS, generator=g)
    background = torch.randn(CHANNELS, generator=g) * 0.3
    return colours, background


COLOURS, BACKGROUND = _palette()


def _prompts():
    g = torch.Generator().manual_seed(4321)
    context = torch.randn(CLASSES, TOKENS, TEXT_DIM, generator=g)
    pooled = torch.randn(CLASSES, POOLED_DIM, generator=g)
    return context, pooled


CONTEXT, POOLED = _prompts()


def prompt(cls: int | None):
    """(context [1, TOKENS, TEXT_DIM], pooled [1, POOLED_DIM]) of a class; None: the empty prompt."""
    if cls is None:
        return torch.zeros(1, TOKENS, TEXT_DIM), torch.zeros(1, POOLED_DIM)
    return CONTEXT[cls : cls + 1].clone(), POOLED[cls : cls + 1].clone()


def _fill(canvas, colour, mask):
    canvas[:, mask] = colour[:, None]


def draw_image(cls: int, g: torch.Generator) -> torch.Tensor:
    """[CHANNELS, IMAGE_SIZE, IMAGE_SIZE]: one square or disc of the class colour."""
    n = IMAGE_SIZE
    out = BACKGROUND[:, None, None].repeat(1, n, n)
    size = int(torch.randint(5, 10, (1,), generator=g))
    y0, x0 = (int(v) for v in torch.randint(0, n - size + 1, (2,), generator=g))
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    if torch.rand((), generator=g) < 0.5:
        mask = (yy >= y0) & (yy < y0 + size) & (xx >= x0) & (xx < x0 + size)
    else:
        c, r = (size - 1) / 2, size / 2
        mask = (yy - y0 - c) ** 2 + (xx - x0 - c) ** 2 <= r * r
    _fill(out, COLOURS[cls], mask)
    return out


def draw_video(cls: int, g: torch.Generator) -> torch.Tensor:
    """[CHANNELS, VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE]: a square of the class colour moving right."""
    n, s, T = VIDEO_SIZE, VIDEO_SQUARE, VIDEO_FRAMES
    dy, dx = DIRECTION
    travel = VIDEO_SPEED * (T - 1)
    out = BACKGROUND[:, None, None, None].repeat(1, T, n, n)

    def start(d):
        if d == 0:
            return int(torch.randint(0, n - s + 1, (1,), generator=g))
        lo = 0 if d > 0 else travel
        return lo + int(torch.randint(0, n - s - travel + 1, (1,), generator=g))

    y0, x0 = start(dy), start(dx)
    for t in range(T):
        y, x = y0 + dy * VIDEO_SPEED * t, x0 + dx * VIDEO_SPEED * t
        out[:, t, y : y + s, x : x + s] = COLOURS[cls][:, None, None]
    return out


def draw(kind: str, cls: int, g: torch.Generator) -> torch.Tensor:
    return draw_image(cls, g) if kind == "image" else draw_video(cls, g)


def _object(frame: torch.Tensor):
    """Foreground mask of one [C, H, W] frame: pixels nearer any class colour than the background."""
    px = frame.flatten(1).T  # [HW, C]
    d_bg = (px - BACKGROUND).norm(dim=1)
    d_col = torch.cdist(px, COLOURS).min(dim=1).values
    return (d_col < d_bg).reshape(frame.shape[1:])


def _radius() -> float:
    d = torch.cdist(COLOURS, COLOURS)
    return float(d[d > 0].min()) * 0.4


RADIUS = _radius()  # how near a class colour the object's mean colour must be


def classify_frame(frame: torch.Tensor):
    """(class of the object, its mask) or (None, mask) when there is no clear object: the object is
    2-60% of the frame, at least 70% of its pixels are nearest one class colour, and its mean
    colour is within RADIUS of that colour."""
    mask = _object(frame)
    frac = float(mask.float().mean())
    if not 0.02 <= frac <= 0.6:
        return None, mask
    px = frame[:, mask].T
    nearest = torch.cdist(px, COLOURS).argmin(dim=1)
    cls = int(torch.mode(nearest).values)
    if float((nearest == cls).float().mean()) < 0.7 or float((px.mean(0) - COLOURS[cls]).norm()) > RADIUS:
        return None, mask
    return cls, mask


def check_image(latent: torch.Tensor, cls: int) -> bool:
    """latent [C, H, W] (model space): one object, of the class colour."""
    got, _ = classify_frame(latent.float())
    return got == cls


def check_video(latent: torch.Tensor, cls: int) -> bool:
    """latent [C, T, H, W] (model space): every frame has an object of the class colour, and its
    centroid moved at least one square's half-width right (the dominant axis)."""
    latent = latent.float()
    centres = []
    for t in range(latent.shape[1]):
        got, mask = classify_frame(latent[:, t])
        if got != cls:
            return False
        ys, xs = torch.nonzero(mask, as_tuple=True)
        centres.append((ys.float().mean(), xs.float().mean()))
    dy = float(centres[-1][0] - centres[0][0])
    dx = float(centres[-1][1] - centres[0][1])
    want_dy, want_dx = DIRECTION
    moved = dy * want_dy + dx * want_dx  # along the direction
    across = abs(dy * want_dx) + abs(dx * want_dy)
    return moved >= VIDEO_SQUARE / 2 and moved > across


def check(kind: str, latent: torch.Tensor, cls: int) -> bool:
    return check_image(latent, cls) if kind == "image" else check_video(latent, cls)


def _rgb_projection() -> torch.Tensor:
    """[3, CHANNELS + 1]: affine map with each class colour -> its RGB and the background -> dark."""
    src = torch.cat([COLOURS, BACKGROUND[None]])  # [9, C]
    src = torch.cat([src, torch.ones(len(src), 1)], dim=1)  # affine
    dst = torch.cat([RGB, RGB_BACKGROUND[None]])  # [9, 3]
    return torch.linalg.lstsq(src, dst).solution.T


PROJECTION = _rgb_projection()


def to_rgb(latent: torch.Tensor) -> torch.Tensor:
    """latent [C, ..., H, W] (model space) -> RGB in [0, 1], [3, ..., H, W] (a fixed affine projection)."""
    x = latent.float().movedim(0, -1)
    x = torch.cat([x, torch.ones(*x.shape[:-1], 1)], dim=-1)
    return (x @ PROJECTION.T).movedim(-1, 0).clamp(0, 1)
