"""The per-epoch progress bar of ``fit``:

    Epoch 3/10
     1536/6000 [=======>......................] - ETA: 2s - loss: 0.4123 - accuracy: 0.8750

and, when the epoch ends,

     6000/6000 [==============================] - 3s 0.52ms/sample - loss: 0.3981 - accuracy: 0.8812 - val_loss: ...

On a terminal the line is redrawn in place (at most 10 times a second); elsewhere (a log
file, a pipe, captured output) only the final line of each epoch is written.
"""
import sys
import time

__all__ = ["Progbar", "format_logs", "format_duration"]


def format_duration(seconds):
    seconds = max(0.0, float(seconds))
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    if seconds >= 10:
        return f"{seconds:.0f}s"
    return f"{seconds:.1f}s"


def format_logs(logs):
    return "".join(f" - {k}: {v:.4f}" if isinstance(v, float) else f" - {k}: {v}" for k, v in logs.items())


class Progbar:
    """``target`` samples; ``update(done, logs)`` after each batch, ``finish(logs)`` at the end."""

    def __init__(self, target, width=30, stream=None, interval=0.1, dynamic=None):
        self.target = int(target)
        self.width = int(width)
        self.stream = sys.stdout if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.dynamic = bool(isatty and isatty()) if dynamic is None else bool(dynamic)
        self.interval = float(interval)
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_len = 0

    def _bar(self, done):
        digits = len(str(self.target))
        frac = done / self.target if self.target else 1.0
        filled = int(self.width * frac)
        bar = "=" * filled
        if done < self.target:
            bar += ">"
        bar = bar[:self.width].ljust(self.width, ".")
        return f"{done:{digits}d}/{self.target} [{bar}]"

    def _write(self, text, final):
        if self.dynamic:
            pad = max(0, self._last_len - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._last_len = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, done, logs=None):
        if not self.dynamic:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval:
            return
        self._last_draw = now
        elapsed = now - self.start
        eta = elapsed / done * (self.target - done) if done else 0.0
        self._write(f"{self._bar(done)} - ETA: {format_duration(eta)}{format_logs(logs or {})}", final=False)

    def finish(self, logs=None, done=None):
        done = self.target if done is None else done
        elapsed = time.perf_counter() - self.start
        per_sample = elapsed / done * 1e3 if done else 0.0
        self._write(f"{self._bar(done)} - {format_duration(elapsed)} {per_sample:.2f}ms/sample"
                    f"{format_logs(logs or {})}", final=True)
