"""The compiled modules (pyproject.toml holds everything else): `tradecache.ingest._frames` (NATS
frames and ack subjects) and `tradecache.serialization._struct_decode` (the Struct decoders).

Optional: where no C compiler is found the build goes on without them, and tradecache does the
same in Python instead (the same results, more CPU per message)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tradecache.ingest._frames",
            ["tradecache/ingest/_frames.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "tradecache.serialization._struct_decode",
            ["tradecache/serialization/_struct_decode.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
