"""The one compiled module, `tradecache.ingest._frames` (pyproject.toml holds everything else).

Optional: where no C compiler is found the build goes on without it, and tradecache parses
NATS frames and ack subjects in Python instead (the same results, more CPU per delivery)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tradecache.ingest._frames",
            ["tradecache/ingest/_frames.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
