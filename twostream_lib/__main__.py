"""Command line: ``python -m twostream_lib <command> ...`` (also installed as ``twostream``).

Each command lives next to the code it drives; this module only dispatches.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fetch": ("twostream_lib.data.download", "Download and unpack UCF101/HMDB51 (needs internet)."),
    "verify": ("twostream_lib.data.download", "Check an unpacked data set against its split files."),
    "prepare": ("twostream_lib.data.prepare", "Videos -> frames + TV-L1 flow (authors' layout or packed)."),
    "synthetic": ("twostream_lib.data.synthetic", "Generate and prepare the synthetic demo data set."),
    "rehearsal": ("twostream_lib.data.rehearsal", "Generate the smoke profile's UCF101-layout rehearsal set."),
    "train": ("twostream_lib.experiments.cli", "Train one stream or fusion row of a profile (as the notebooks do)."),
    "idt": ("twostream_lib.idt.pipeline", "Dense trajectories + Fisher vectors + SVM (Table 6)."),
    "plan": ("twostream_lib.plan", "What a profile's notebooks need (disk, RAM, GPU hours), before running."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m twostream_lib <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<10} {help_text}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli_main([name, *rest]) or 0)


if __name__ == "__main__":
    sys.exit(main())
