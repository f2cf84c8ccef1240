"""python -m bbbdeploy check | dashboards"""

import sys

from bbbdeploy import check, dashboards


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        return check.main()
    if argv == ["dashboards"]:
        for path in dashboards.write():
            print(path)
        return 0
    print("usage: python -m bbbdeploy check | dashboards", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
