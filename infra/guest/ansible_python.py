#!/usr/bin/python3
"""boma-it: the Python that runs Ansible's modules on this test VM (the harness's, not the host's).

It is /usr/bin/python3 with one difference: the code Ansible ships inside each module's payload
(AnsiballZ: a zip of the module and its ansible.module_utils) is compiled once per source and
the result kept, where python3 compiles it again for every task (zipimport never caches
bytecode). Under software emulation that compile is ~0.75 s of every module call. The kept code
is the compile of the very same source bytes by this very Python, and a traceback names the
payload's own file, so a module runs exactly as it would under python3.

- With no arguments (Ansible's pipelining), it runs the program on its stdin, as python3 does.
- With a file first (a module file, async_wrapper), it runs that file, as python3 does.
- With anything else (`-m pip`, `-c ...`: a role's own use of ansible_python_interpreter), it
  is python3 itself.
The cache is root's alone (modules run as root under become); a module run as another user
compiles as python3 would.
"""
import os
import sys

PYTHON = "/usr/bin/python3"
CACHE = "/var/cache/boma-it/ansible-modules"


def cache_compiles():
    """Wraps zipimport's compile of a module's source in a lookup of the kept code."""
    try:
        import _imp
        import hashlib
        import marshal
        import zipimport

        compile_source = zipimport._compile_source
        fix_filename = _imp._fix_co_filename
    except (ImportError, AttributeError):
        return

    def cached(pathname, source):
        # The path inside the payload: the payload's own folder is new for every task.
        inside = pathname.split(".zip" + os.sep, 1)[-1]
        key = hashlib.sha256(b"\0".join([sys.version.encode(), inside.encode(), source])).hexdigest()
        path = os.path.join(CACHE, key)
        try:
            with open(path, "rb") as kept:
                code = marshal.load(kept)
            fix_filename(code, pathname)
            return code
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile_source(pathname, source)
        try:
            os.makedirs(CACHE, mode=0o700, exist_ok=True)
            partial = "%s.%d" % (path, os.getpid())
            with open(partial, "wb") as kept:
                marshal.dump(code, kept)
            os.replace(partial, path)
        except OSError:
            pass
        return code

    zipimport._compile_source = cached


def main():
    args = sys.argv[1:]
    if args and not os.path.isfile(args[0]):
        os.execv(PYTHON, [PYTHON] + args)
    cache_compiles()
    import runpy
    import types

    if args:
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.realpath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
        return
    # As `python3 < program`: the program is __main__, named <stdin>, with the current folder first on the path.
    sys.argv = [""]
    sys.path[0] = ""
    program = sys.stdin.buffer.read()
    module = types.ModuleType("__main__")
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    exec(compile(program, "<stdin>", "exec"), module.__dict__)


if __name__ == "__main__":
    main()
