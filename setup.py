"""Only the compiled part lives here; everything else is in setup.cfg."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("services.sip._cscan", ["services/sip/_cscan.c"], extra_compile_args=["-O2", "-Wall"]),
                   Extension("services.http._chead", ["services/http/_chead.c"], extra_compile_args=["-O2", "-Wall"])])
