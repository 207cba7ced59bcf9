"""What units run: ``PYTHON -IS /…/unitgen_probe/start.py ARGS`` (unitgen/paths.py).

Not pip's console-script wrapper, which imports re (about 5 ms) after site
has read every .pth file of the install: -I (no environment, no user
site, no script directory on sys.path) and -S (no site) start the bare
interpreter, and the directory holding this package is added by hand, after
the standard library, so that nothing installed beside unitgen can shadow
it. PYTHON is the interpreter pip wrote into unitgen-probe's #! line: the
install's own, whether a venv, the system or pipx.
"""

import sys

if __name__ == "__main__":
    sys.path.append(__file__.rpartition("/")[0].rpartition("/")[0])
    from unitgen_probe.cli import main

    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: let the interpreter's own exit say so
        sys.exit(status)
    # Nothing of the probe needs the interpreter's finalization (threads are
    # abandoned, helpers killed already): skipping it saves a millisecond
    # or two at every exit, start-up figures and notice latency included.
    import posix

    posix._exit(status)
