"""python -m bbbdeploy check | dashboards | checkov PROGRAM"""

import sys

from bbbdeploy import check, dashboards, scan


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        return check.main()
    if argv == ["dashboards"]:
        for path in dashboards.write():
            print(path)
        return 0
    if len(argv) == 2 and argv[0] == "checkov":
        return scan.main(argv[1])
    print("usage: python -m bbbdeploy check | dashboards | checkov PROGRAM", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
