"""`python -m tfresnet.examples DIR`: a small example image folder that any machine can make,
with no download (`tfresnet.data.examples.write_shapes_folder`).

One sub-folder per class, each class a colour and a shape on a noisy background: enough to
try the whole workflow offline in a minute. With `--multi-label`, images holding several shapes
in `DIR/images/` and their label sets in `DIR/labels.csv` (`write_multi_label_set`), for
`python -m tfresnet.finetune --csv DIR/labels.csv --multi-label`.
"""

from __future__ import annotations

import argparse
import os
import sys

from tfresnet.data.examples import CLASS_COLORS, MULTI_LABEL_CSV, write_multi_label_set, write_shapes_folder


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m tfresnet.examples", description="Write a small example image folder."
    )
    parser.add_argument("directory", help="folder to write (one sub-folder per class)")
    parser.add_argument("--classes", type=int, default=3, help=f"2 to {len(CLASS_COLORS)}")
    parser.add_argument("--images-per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="side of the images, in pixels")
    parser.add_argument(
        "--multi-label",
        action="store_true",
        help="images with several shapes each, listed in DIR/labels.csv (--classes labels, "
        "--images-per-class x --classes images)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Writes the folder; returns the exit code (0 done, 2 bad flags).

    Example:
        main(["shapes/", "--classes", "3"])
        # 0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.multi_label:
            label_sets = write_multi_label_set(
                args.directory,
                num_labels=args.classes,
                images=args.images_per_class * args.classes,
                size=args.size,
            )
        else:
            names = write_shapes_folder(
                args.directory,
                num_classes=args.classes,
                images_per_class=args.images_per_class,
                size=args.size,
            )
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.multi_label:
        csv_path = os.path.join(args.directory, MULTI_LABEL_CSV)
        print(f"wrote {len(label_sets)} images with {args.classes} labels, listed in {csv_path}")
    else:
        print(f"wrote {len(names)} classes ({', '.join(names)}) to {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
