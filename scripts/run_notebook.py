"""Execute a results notebook on a folder of result records and write it with its outputs.

    python scripts/run_notebook.py notebooks/explore_results.ipynb --results results/runs --experiment demo \
        --out results/notebooks/explore_results.ipynb
    python scripts/run_notebook.py notebooks/explore_results.ipynb --out inplace

The notebook reads its parameters from the environment (``ADATP_RESULTS``, ``ADATP_EXPERIMENT``, ``ADATP_OVERRIDES``),
so nothing is injected into it. The kernel is the Jupyter kernel ``python3`` started with this interpreter, in the
notebook's folder. The notebook is written even when a cell fails (the error is in that cell's output); the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

#: argv[0] values jupyter_client replaces by the launching interpreter (``KernelManager.format_kernel_cmd``).
_PORTABLE_PYTHONS = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}


class NotebookError(RuntimeError):
    """A notebook could not be executed: a cell raised, or the kernel is not this interpreter's."""


def check_kernel(kernel: str = "python3") -> Path:
    """The kernel spec folder of ``kernel``, after checking that the kernel runs this interpreter (``sys.executable``):
    a spec whose argv names another Python (a user-level ``~/.local/share/jupyter`` spec, say) would execute the
    notebook outside this environment."""
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel as exc:
        raise NotebookError(f"no Jupyter kernel named {kernel!r}: install ipykernel into {sys.prefix}") from exc
    exe = spec.argv[0] if spec.argv else ""
    if exe not in _PORTABLE_PYTHONS and Path(exe).resolve() != Path(sys.executable).resolve():
        raise NotebookError(
            f"kernel {kernel!r} ({spec.resource_dir}) runs {exe}, not {sys.executable}: remove that kernel spec or "
            "run `python -m ipykernel install --sys-prefix` from this environment"
        )
    return Path(spec.resource_dir)


def execute_notebook(
    notebook: Path,
    results: Path | None = None,
    experiment: str | None = None,
    overrides: list[str] | None = None,
    out: Path | None = None,
    timeout: int = 300,
    kernel: str = "python3",
) -> nbformat.NotebookNode:
    """Run every cell of ``notebook`` in a fresh kernel whose working directory is the notebook's folder.

    Args:
        results: the records folder (``ADATP_RESULTS``); None leaves the notebook's default (the checkout's).
        experiment: the grid of the Table 1 section (``ADATP_EXPERIMENT``); None: the notebook's default.
        overrides: extra Hydra overrides the sweep used (``ADATP_OVERRIDES``).
        out: where the executed notebook is written (also when a cell fails); None: not written.
        timeout: seconds each cell may run.

    Returns:
        The executed notebook.

    Raises:
        NotebookError: a cell raised (its traceback is in the message and in the written notebook), or the kernel
            is not this interpreter's.
    """
    notebook = Path(notebook).resolve()
    check_kernel(kernel)
    env = dict(os.environ)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures as image/png outputs
    env["PYTHONUNBUFFERED"] = "1"
    if results is not None:
        env["ADATP_RESULTS"] = str(Path(results).resolve())
    if experiment is not None:
        env["ADATP_EXPERIMENT"] = experiment
    if overrides is not None:
        env["ADATP_OVERRIDES"] = " ".join(overrides)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        allow_errors=False,
        resources={"metadata": {"path": str(notebook.parent)}},  # the kernel's cwd
    )
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        raise NotebookError(f"{notebook.name}: a cell raised\n{exc}") from exc
    finally:
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out)
    return nb


def main(argv: list[str] | None = None) -> int:
    """CLI: execute a notebook and write it with its outputs; exit 1 if a cell raised."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--results", type=Path, default=None, help="records folder (default: the notebook's own)")
    parser.add_argument("--experiment", default=None, help="experiment whose grid the Table 1 section shows")
    parser.add_argument("--overrides", nargs="*", default=None, help="extra Hydra overrides the sweep used")
    parser.add_argument(
        "--out",
        default=None,
        help="executed notebook's path, or 'inplace' (default: results/notebooks/<name> under the current folder)",
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    if args.out == "inplace":
        out = args.notebook
    else:
        out = Path(args.out) if args.out else Path("results") / "notebooks" / args.notebook.name
    start = time.perf_counter()
    try:
        execute_notebook(args.notebook, args.results, args.experiment, args.overrides, out, args.timeout, args.kernel)
    except NotebookError as exc:
        print(exc, file=sys.stderr)
        print(f"wrote {out} (with the failing cell's error)", file=sys.stderr)
        return 1
    print(f"executed {args.notebook} in {time.perf_counter() - start:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
