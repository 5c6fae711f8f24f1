"""Command lines of the pyscripts: the extraction options (general ones, then the chosen
toolkit's declared ones) and one way of reporting errors."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from speechdump.device import CPU_LAYOUTS
from speechdump.errors import OptionError, SpeechdumpError
from speechdump.extractors import available, declared_options, get_class
from speechdump.extractors.base import parse_bool
from speechdump.precision import DEFAULT as DEFAULT_PRECISION
from speechdump.precision import PRECISIONS

DEFAULT_TOOLKIT = "resemblyzer"


def str2bool(value: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_general_options(p: argparse.ArgumentParser) -> None:
    """The options of every extraction, whatever the toolkit."""
    p.add_argument("--toolkit", default=DEFAULT_TOOLKIT,
                   help=f"the extractor: {', '.join(available())}; --toolkit X --help lists "
                        "X's own options")
    p.add_argument("--model", default="", help="local model path (the toolkit's own layout)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="storage type of the float streams (int streams stay int32)")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="arithmetic of the forward passes: fp32 (exact float32, TF32 off), "
                        "tf32 (GPU only), bf16 or fp16 (torch.autocast; fp16 GPU only); "
                        "outputs are stored as --dtype says (speechdump/precision.py)")
    p.add_argument("--cpu_layout", default="auto", choices=CPU_LAYOUTS,
                   help="how a CPU job spends its cores: intra_op (one forward pass on all of "
                        "them, as a plain loop), passes (one single-threaded pass per core at "
                        "once), auto (the toolkit's declared choice, the faster one in "
                        "bench/cpu_layout.py). Floats follow the layout and, with intra_op, the "
                        "core count at the rounding level")
    p.add_argument("--compress", type=str2bool, default=False,
                   help="Kaldi-compress float32 matrices (lossy, as copy-feats --compress)")


def toolkit_of(argv: Sequence[str]) -> str:
    """The ``--toolkit`` of a command line (the default when absent), before a full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--toolkit", default=DEFAULT_TOOLKIT)
    return pre.parse_known_args(argv)[0].toolkit


def add_toolkit_options(p: argparse.ArgumentParser, toolkit: str) -> List[str]:
    """``toolkit``'s declared options as a group of ``p``; returns their names. Values stay
    strings here (default None: not given); ``speechdump.extractors.option_values`` parses and
    checks them, so the command line and Python callers get the same errors."""
    cls = get_class(toolkit)
    group = p.add_argument_group(f"options of --toolkit {toolkit}"
                                 + (f" (--model: {cls.model_help})" if cls.model_help else ""))
    names = []
    for option in declared_options(toolkit):
        group.add_argument(f"--{option.name}", default=None, metavar=option.type.__name__.upper(),
                           help=option.describe())
        names.append(option.name)
    return names


def parse_extraction_args(p: argparse.ArgumentParser, argv: Optional[Sequence[str]]
                          ) -> Tuple[argparse.Namespace, dict]:
    """Parses ``argv`` with the general options already on ``p`` plus the toolkit's; returns
    the namespace and the extractor options given ({name: string}). An option the toolkit does
    not declare is an OptionError naming the toolkit and its options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    toolkit = toolkit_of(argv)
    get_class(toolkit)  # an unknown toolkit is refused by name, before --help
    names = add_toolkit_options(p, toolkit)
    args, extra = p.parse_known_args(argv)
    if extra:
        unknown = [word for word in extra if word.startswith("-")] or extra
        raise OptionError(f"{toolkit} takes no option {' '.join(unknown)}; its options: "
                          f"{' '.join('--' + n for n in names)} (pyscripts/extract.py --toolkit "
                          f"{toolkit} --help says what each does)")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    for name in names:
        delattr(args, name)
    return args, given


def run(main: Callable[[], Optional[int]]) -> int:
    """Runs a pyscript's ``main``; a SpeechdumpError ends it with ``ERROR: <message>``, exit 1."""
    try:
        return main() or 0
    except SpeechdumpError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
