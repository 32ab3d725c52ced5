"""``sparsify convert``: read a network in one format and write it in another."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Read the network IN and write it to OUT. Both formats follow from the file
suffixes: .npz (sparsify), .onnx, .safetensors (PyTorch state_dict names,
written in the torch.nn.utils.prune convention). With --format csr, OUT is an
.npz archive of scipy.sparse CSR arrays (data/indices/indptr/shape per layer)
and the dense and CSR byte sizes of each layer are printed. Nothing is
written when IN cannot be read or converted.
"""

EXAMPLES = """\
examples:
  sparsify convert pruned.npz pruned.onnx
  sparsify convert pruned.npz pruned.safetensors
  sparsify convert model.onnx model.npz
  sparsify convert state.safetensors model.npz --activations relu,relu,identity
  sparsify convert pruned.npz pruned_csr.npz --format csr
"""


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a model between .npz, .onnx, .safetensors and CSR",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="IN", help="network to read (.npz, .onnx or .safetensors)")
    p.add_argument("out", metavar="OUT", help="file to write; its suffix picks the format unless --format csr")
    p.add_argument("--activations", metavar="A,B,...",
                   help="activation per layer where IN does not record them, e.g. relu,relu,identity")
    p.add_argument("--format", choices=["auto", "csr"], default="auto",
                   help="auto: from OUT's suffix (default); csr: scipy.sparse CSR arrays in an .npz archive")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..io import SUFFIXES, save
    from ._common import check_outputs, load_model

    suffix = Path(args.out).suffix.lower()
    if args.format == "auto" and suffix not in SUFFIXES:
        raise ValueError(f"OUT: cannot tell the format of {args.out!r} from its suffix {suffix or '(none)'!r}; "
                         f"supported suffixes are {', '.join(SUFFIXES)} (or give --format csr).")
    check_outputs((args.out, "OUT"))  # before reading IN
    net = load_model(args)
    if args.format == "csr":
        from ..io.csr import csr_sizes, format_sizes, save_csr

        save_csr(net, args.out)
        print(format_sizes(csr_sizes(net)))
    else:
        save(net, args.out)
    print(f"wrote {args.out} ({net})")
    return 0
