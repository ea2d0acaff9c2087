"""Figure helpers shared by experiments: one look for every risk curve in the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from efflab.io import atomic_save  # noqa: E402


def save_figure(fig, outdir: Path, name: str, dpi: int = 120) -> str:
    """Save ``fig`` as ``outdir/name`` (PNG) atomically, close it, return the file name."""
    atomic_save(Path(outdir) / name, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                            bbox_inches="tight"))
    plt.close(fig)
    return name


def plot_risk_curve(ax, x, mean, err=None, theory_x=None, theory_y=None, judged=None,
                    threshold: float | None = 1.0, label: str = "simulation",
                    theory_label: str = "theory", log: bool = True, xlabel: str = "p / n",
                    ylabel: str = "test risk") -> None:
    """Empirical points (with error bars) against a theory curve, the threshold marked.

    ``judged``: boolean mask; points outside it are drawn hollow, as "shown, not judged".
    """
    x, mean = np.asarray(x, float), np.asarray(mean, float)
    err = None if err is None else np.asarray(err, float)
    judged = np.ones_like(x, bool) if judged is None else np.asarray(judged, bool)
    if theory_x is not None:
        ty = np.asarray(theory_y, float)
        finite = np.isfinite(ty)
        # break the line where theory diverges so it is not drawn across the pole
        ty = np.where(finite, ty, np.nan)
        ax.plot(theory_x, ty, "-", color="C0", lw=1.8, label=theory_label, zorder=2)
    for mask, fmt, color, face, lab in (
            (judged, "o", "C1", "C1", f"{label} (judged)"),
            (~judged, "s", "0.35", "white", f"{label} (near threshold, not judged)")):
        if mask.any():
            ax.errorbar(x[mask], mean[mask], yerr=None if err is None else err[mask], fmt=fmt,
                        ms=5, mfc=face, mec=color, ecolor=color, elinewidth=1, capsize=2,
                        label=lab, zorder=3)
    if threshold is not None:
        ax.axvline(threshold, color="0.4", ls="--", lw=1, label="interpolation threshold")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
