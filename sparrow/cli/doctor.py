"""``sparrow doctor``: every tool the flow uses, with version and path."""


def configure(parser):
    pass


def run(args):
    from sparrow.toolchain import probe
    rows = probe()
    missing = []
    width = max(len(t.name) for t, _, _ in rows)
    for tool, ver, path in rows:
        if path is None or ver is None:
            missing.append(f"missing: {tool.name} ({tool.hint})")
            continue
        print(f"{tool.name:<{width}}  {ver:<48}  {path}")
    for line in missing:
        print(line)
    return 1 if missing else 0
