"""Build of fastnn: the C kernels in csrc/ become one static library, linked into
every Cython module fastnn/*.pyx.

Environment switches (all off by default, so wheels stay portable):
  FASTNN_NATIVE_TUNE=1   add -march=native (a local build tuned to this CPU)
  FASTNN_SANITIZE=1      AddressSanitizer + UndefinedBehaviorSanitizer build
  FASTNN_NO_OPENMP=1     build single-threaded even when OpenMP is available
"""
import glob
import os
import sys
import tempfile

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_clib import build_clib
from setuptools.command.build_ext import build_ext

KERNEL_LIB = "fastnn_kernels"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler_is_msvc(compiler):
    return getattr(compiler, "compiler_type", "") == "msvc"


kernel_sources = sorted(glob.glob(os.path.join("csrc", "*.c")))
kernel_headers = sorted(glob.glob(os.path.join("csrc", "*.h")))

_openmp_cache = {}


def _openmp_flags(compiler):
    """(compile_args, link_args) enabling OpenMP, or ([], []) when the compiler has none."""
    if _flag("FASTNN_NO_OPENMP"):
        return [], []
    key = getattr(compiler, "compiler_type", "")
    if key in _openmp_cache:
        return _openmp_cache[key]
    candidates = [(["/openmp"], [])] if _compiler_is_msvc(compiler) else [
        (["-fopenmp"], ["-fopenmp"]),
        (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),  # macOS with Homebrew libomp
    ]
    result = ([], [])
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){int n=0;\n"
                    "#pragma omp parallel reduction(+:n)\nn+=1;\nreturn omp_get_max_threads()>0&&n>0?0:1;}\n")
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_probe", output_dir=tmp, extra_postargs=lflags)
                result = (cflags, lflags)
                break
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP with these flags"
                continue
    if not result[0]:
        print("fastnn: the compiler has no OpenMP; building single-threaded kernels", file=sys.stderr)
    _openmp_cache[key] = result
    return result


def _common_cflags(compiler):
    if _compiler_is_msvc(compiler):
        return ["/O2"]
    # -fno-math-errno: no kernel reads errno, and with it sqrtf is a call (with a
    # branch for negative arguments) instead of sqrtps, so the Adam, RMSprop and
    # Adagrad updates stayed scalar (a `#pragma GCC optimize` in optim.c did not
    # reach its target-specific copies). Results are unchanged.
    # -ffp-contract=off: a*b + c stays two roundings, so a loop gives the same bits on every
    # SIMD path and from every compiler (GCC's -std=c11 implies it; clang's default fuses
    # them into an FMA where the target has one). The kernels write their FMAs explicitly.
    flags = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-fno-math-errno",
             "-Wno-unused-function"]
    if _flag("FASTNN_NATIVE_TUNE"):
        flags.append("-march=native")
    if _flag("FASTNN_SANITIZE"):
        flags = ["-O1", "-g", "-std=c11", "-ffp-contract=off", "-fno-omit-frame-pointer",
                 "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    return flags


def _sanitize_link_flags(compiler):
    return ["-fsanitize=address,undefined"] if _flag("FASTNN_SANITIZE") and not _compiler_is_msvc(compiler) else []


def _build_macros(omp_cflags):
    # NPY_1_23: the memory-handler API (NumPy 1.22+) and the oldest NumPy fastnn runs on.
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]
    if omp_cflags:
        macros.append(("FASTNN_HAVE_OPENMP", "1"))
    return macros


class BuildKernelLib(build_clib):
    """Compiles csrc/*.c with the OpenMP and tuning flags found for this compiler."""

    def build_libraries(self, libraries):
        omp_c, _ = _openmp_flags(self.compiler)
        tuned = []
        for name, info in libraries:
            info = dict(info)
            info["cflags"] = _common_cflags(self.compiler) + omp_c
            info["macros"] = _build_macros(omp_c)
            tuned.append((name, info))
        super().build_libraries(tuned)


class BuildExtensions(build_ext):
    def run(self):
        # `setup.py build_ext --inplace` (the developer build) must build the kernel library too.
        self.run_command("build_clib")
        super().run()

    def build_extensions(self):
        omp_c, omp_l = _openmp_flags(self.compiler)
        for ext in self.extensions:
            ext.extra_compile_args = _common_cflags(self.compiler) + omp_c
            ext.extra_link_args = omp_l + _sanitize_link_flags(self.compiler)
            ext.define_macros = _build_macros(omp_c)
        super().build_extensions()


def _extensions():
    from Cython.Build import cythonize

    exts = []
    for pyx in sorted(glob.glob(os.path.join("fastnn", "*.pyx"))):
        modname = "fastnn." + os.path.splitext(os.path.basename(pyx))[0]
        # depends: a changed kernel source or header relinks every module against the new library.
        exts.append(Extension(modname, [pyx], include_dirs=["csrc", np.get_include()],
                              depends=kernel_sources + kernel_headers))
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


setup(
    libraries=[(KERNEL_LIB, {"sources": kernel_sources, "include_dirs": ["csrc"],
                             "obj_deps": {"": kernel_headers}})],
    ext_modules=_extensions(),
    cmdclass={"build_clib": BuildKernelLib, "build_ext": BuildExtensions},
)
