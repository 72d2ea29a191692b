"""A small pygame window for small frames (64x64 and the like): ``render_mode="human"`` and ``adaworld play`` share it.

pygame is the optional ``play`` extra (``pip install "adaworld-gym[play]"``); it is imported when a window is
first opened, so the rest of the package never needs it. With ``SDL_VIDEODRIVER=dummy`` the window is virtual
(CI, headless machines).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import numpy as np

__all__ = ["PygameViewer", "import_pygame", "no_display"]


def no_display() -> bool:
    """True on a Linux machine without X11 or Wayland (and no SDL driver chosen), where SDL would fall back to an
    invisible window."""
    if not sys.platform.startswith("linux") or os.environ.get("SDL_VIDEODRIVER"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def import_pygame() -> Any:
    """pygame, or an ImportError that says how to install it."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as e:
        raise ImportError(
            'a pygame window (render_mode="human", adaworld play) needs pygame: pip install "adaworld-gym[play]"'
        ) from e
    return pygame


_open_viewers = 0  # pygame has one display per process: it is shut only when the last viewer closes


class PygameViewer:
    """Shows uint8 ``[H, W, 3]`` frames scaled up by ``scale``, at most ``fps`` per second (None: no limit).

    Viewers in one process share pygame's single window; closing one leaves the others working.

    Args:
        caption: the window title.
        scale: integer upscaling of the frames.
        fps: frame rate cap applied in :meth:`show`.
    """

    def __init__(self, caption: str = "AdaWorld", scale: int = 4, fps: float | None = None) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if no_display():
            warnings.warn(
                "no display (DISPLAY and WAYLAND_DISPLAY are unset): the window will not be seen; use "
                'render_mode="rgb_array" to get the frames, or set SDL_VIDEODRIVER=dummy to silence this',
                stacklevel=3,
            )
        global _open_viewers
        self.pygame = import_pygame()
        self.pygame.display.init()  # the display only: no audio device is opened
        _open_viewers += 1
        self.caption, self.scale, self.fps = caption, scale, fps
        self.screen: Any = None
        self.clock = self.pygame.time.Clock()
        self.closed = False

    def show(self, frame: np.ndarray, caption: str | None = None) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if self.closed:
            return
        pg = self.pygame
        size = (frame.shape[1] * self.scale, frame.shape[0] * self.scale)
        # another viewer may have resized or re-created the shared window
        if (
            self.screen is None
            or pg.display.get_surface() is not self.screen
            or self.screen.get_size() != size
        ):
            self.screen = pg.display.set_mode(size)
        pg.display.set_caption(caption or self.caption)
        surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        self.screen.blit(pg.transform.scale(surface, size), (0, 0))
        pg.display.flip()
        if self.fps:
            self.clock.tick(self.fps)

    def events(self) -> list[Any]:
        """The pygame events since the last call (empty once closed)."""
        if self.closed:
            return []
        return list(self.pygame.event.get())

    def close(self) -> None:
        global _open_viewers
        if not self.closed:
            self.closed = True
            _open_viewers -= 1
            if _open_viewers == 0:
                self.pygame.display.quit()
