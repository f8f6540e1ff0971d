"""A pickle reader that never runs pickle-controlled code and never lets a file steer numpy.

``pickle.Unpickler`` with a restricted ``find_class`` is not enough: admitting ``numpy.dtype`` lets
a file set a dtype's internal state (an object dtype whose flags say it holds no references), and
numpy then reads attacker bytes as object pointers. This module therefore interprets the pickle
opcodes itself (protocols 0-5, as written by ``pickle`` and numpy) and only ever yields

* ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``;
* ``list``, ``tuple``, ``dict``, ``set``, ``frozenset`` of those;
* numpy arrays and scalars that it builds itself from an allow-listed numeric / string dtype
  (parsed from the pickle's dtype *string*, never from its state), a shape and raw bytes with
  ``np.frombuffer(...).reshape(...).copy()``; object arrays only from a list of plain scalars.

Callables a pickle may name are markers, never called: ``numpy.core.multiarray._reconstruct`` (and
``numpy._core``), ``multiarray.scalar``, ``numeric._frombuffer`` (protocol 5), ``numpy.ndarray``,
``numpy.dtype``, ``_codecs.encode`` and the builtins ``set``, ``frozenset``, ``bytearray``, ``complex``.

Bounds, each checked before the allocation it guards (so a tiny file cannot take gigabytes):
nesting depth (:data:`MAX_DEPTH`; a deep tuple would overflow the C stack when hashed), every
declared byte string and array against the bytes left in the file and :func:`msalign.limits.max_alloc`,
memo indexes (a dict, no pre-allocation), and the size of the loaded structure with shared
references expanded (:data:`MAX_EXPANSION` times the file size): a few KB of references to
references would otherwise become gigabytes in ``np.asarray`` or ``repr``. Cycles are refused.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import mmap
import re
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msalign.errors import MsalignError
from msalign.limits import check_alloc, max_alloc, regular_file, short_repr

MAX_DEPTH = 100  # MMSA files nest 3-4 deep; hashing a tuple nested 100 deep is cheap
MAX_EXPANSION = 16  # objects in the loaded tree (shared references counted each time) per file byte
_MAX_NDIM = 32  # numpy's own limit is 64; no feature file has more than 3
_SMALL_BYTES = 1 << 16  # byte strings up to this size are copied at once; larger stay views of the file

# dtype strings a pickle may name: booleans, integers, floats, complex, fixed-width str/bytes,
# and object (accepted only when the array's data is a list of plain scalars)
_DTYPE = re.compile(
    r"(b1|[iu][1248]|f[248]|c(8|16)|U\d{1,7}|S\d{1,8}|O[48]?|bool|float(16|32|64)|int(8|16|32|64)|"
    r"uint(8|16|32|64)|complex(64|128))"
)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
ByteOrder = Literal["<", ">", "|", "="]  # a pickled dtype state's byte order (checked in build)


class _Global:
    """A name a pickle referenced; a marker, never called."""

    def __init__(self, name: str):
        self.name = name


class _Dtype:
    """``numpy.dtype(spec, ...)`` as pickled: built into a real dtype only from ``spec`` + byte order."""

    def __init__(self, spec: str):
        self.spec = spec
        self.byteorder: ByteOrder = "="
        self.elsize = -1

    def dtype(self, where: str) -> np.dtype:
        order = self.byteorder if self.byteorder in "<>" else "="
        spec = self.spec
        if spec[:1] in "US" and spec[1:] in ("", "0") and self.elsize > 0:  # itemsize carried by the state
            spec = f"{spec[0]}{self.elsize // 4 if spec[0] == 'U' else self.elsize}"
        try:
            dt = np.dtype(spec).newbyteorder(order) if spec[:1] not in "O" else np.dtype(object)
        except TypeError:
            raise MsalignError(f"{where}: unsupported dtype {spec!r}") from None
        if dt.fields is not None or dt.subdtype is not None or dt.kind not in "biufcUSO":
            raise MsalignError(f"{where}: unsupported dtype {spec!r}")
        return dt


class _ArrayStub:
    """``_reconstruct(ndarray, ...)``: an array whose content arrives with BUILD."""


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


class _Reader:
    def __init__(self, data: Any, source: str, size: int):
        self.data = data  # a memoryview of the whole file
        self.view = memoryview(data)
        self.pos = 0
        self.size = size
        self.source = source
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.depths: dict[int, tuple[int, Any]] = {}  # id -> (depth, obj kept alive so ids stay unique)
        self.budget = max_alloc()

    # --- reading the byte stream --------------------------------------------------------------
    def fail(self, message: str) -> MsalignError:
        if message.startswith("refusing"):  # well-formed but unsafe or beyond a bound
            return MsalignError(f"{self.source}: {message} (at byte {self.pos})")
        return MsalignError(
            f"{self.source}: not a readable pickle (truncated or corrupt: {message}, at byte {self.pos})"
        )

    def read(self, n: int) -> memoryview:
        if n < 0 or n > self.size - self.pos:
            raise self.fail(f"declares {n:,} bytes but only {self.size - self.pos:,} remain (truncated or crafted)")
        chunk = self.view[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def readline(self) -> bytes:
        end = (
            self.data.find(b"\n", self.pos) if hasattr(self.data, "find") else bytes(self.view[self.pos :]).find(b"\n")
        )
        if end < 0:
            raise self.fail("truncated text opcode")
        line = bytes(self.view[self.pos : end])
        self.pos = end + 1
        return line

    def u(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self.read(n))[0]

    def charge(self, nbytes: int, what: str) -> None:
        """Bytes this load is about to allocate, against the overall limit."""
        self.budget -= nbytes
        if self.budget < 0:
            check_alloc(max_alloc() - self.budget, f"{self.source}: {what}")

    # --- the stack ------------------------------------------------------------------------------
    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.fail("stack underflow (no MARK)")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def pop(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack[-1]

    def depth_of(self, value: Any) -> int:
        entry = self.depths.get(id(value))
        return entry[0] if entry is not None and entry[1] is value else 0

    def container(self, value: Any, items: Any) -> Any:
        """Record ``value``'s nesting depth (from its items) and refuse it beyond MAX_DEPTH."""
        depth = 1 + max((self.depth_of(v) for v in items), default=0)
        if depth > MAX_DEPTH:
            raise self.fail(f"refusing data nested more than {MAX_DEPTH} levels deep")
        self.depths[id(value)] = (depth, value)
        return value

    def grow(self, container: Any, items: Any) -> None:
        """Items added to an existing list/dict/set raise its recorded depth."""
        deepest = max((self.depth_of(v) for v in items), default=0)
        if deepest + 1 > self.depth_of(container):
            if deepest + 1 > MAX_DEPTH:
                raise self.fail(f"refusing data nested more than {MAX_DEPTH} levels deep")
            self.depths[id(container)] = (deepest + 1, container)

    # --- text, bytes ----------------------------------------------------------------------------
    def text(self, chunk: memoryview) -> str:
        self.charge(len(chunk) * 4, "a string")
        try:
            return str(chunk, "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("a string is not valid UTF-8") from None

    def raw(self, chunk: memoryview) -> Any:
        self.charge(len(chunk) if len(chunk) <= _SMALL_BYTES else 0, "a byte string")
        return bytes(chunk) if len(chunk) <= _SMALL_BYTES else chunk.toreadonly()

    # --- calls ------------------------------------------------------------------------------------
    def call(self, func: Any, args: Any) -> Any:
        if not isinstance(args, tuple):
            raise self.fail("REDUCE arguments are not a tuple")
        name = func.name if isinstance(func, _Global) else None
        if name == "reconstruct":
            return _ArrayStub()
        if name == "dtype":
            if not args or not isinstance(args[0], str) or not _DTYPE.fullmatch(args[0]):
                raise self.fail(f"refusing dtype {_short(args[0] if args else None)} (only numeric and string dtypes)")
            return _Dtype(args[0])
        if name == "scalar":
            if len(args) != 2 or not isinstance(args[0], _Dtype) or not _is_bytes(args[1]):
                raise self.fail("refusing a numpy scalar that is not (numeric dtype, bytes)")
            dt = args[0].dtype(self.source)
            if dt.kind == "O" or len(args[1]) != dt.itemsize:
                raise self.fail(f"refusing a numpy scalar of dtype {dt} from {len(args[1])} bytes")
            return np.frombuffer(_as_bytes(args[1]), dtype=dt, count=1)[0]
        if name == "frombuffer":  # protocol 5: (PickleBuffer, dtype, shape, order)
            if len(args) != 4 or not _is_bytes(args[0]) or not isinstance(args[1], _Dtype) or args[3] not in ("C", "F"):
                raise self.fail("refusing a protocol-5 array that is not (bytes, dtype, shape, order)")
            return self.array(args[1], args[2], args[0], fortran=args[3] == "F", native=False)
        if name == "encode":  # protocol 0-2 byte strings: _codecs.encode(text, 'latin1')
            if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
                raise self.fail("refusing _codecs.encode other than (str, 'latin1')")
            try:
                return args[0].encode("latin1")
            except UnicodeEncodeError:
                raise self.fail("_codecs.encode of a non-latin1 string") from None
        if name in ("set", "frozenset"):
            items = args[0] if args else ()
            if len(args) > 1 or not isinstance(items, (list, tuple, set, frozenset)):
                raise self.fail(f"refusing {name}() of a {type(items).__name__}")
            value = set(items) if name == "set" else frozenset(items)
            return self.container(value, value)
        if name == "bytearray":  # never bytearray(n): that is n zero bytes from a few in the file
            if not args:
                return bytearray()
            if len(args) == 1 and _is_bytes(args[0]):
                self.charge(len(args[0]), "a bytearray")
                return bytearray(args[0])
            if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
                self.charge(len(args[0]), "a bytearray")
                return bytearray(args[0], "latin1")
            raise self.fail("refusing bytearray() of anything but bytes")
        if name == "bytes":  # protocols 0-2 write b"" as bytes()
            if args:
                raise self.fail("refusing bytes() with arguments")
            return b""
        if name == "complex":
            if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) or len(args) > 2:
                raise self.fail("refusing complex() of non-numbers")
            try:
                return complex(*args)
            except OverflowError:
                raise self.fail("complex() out of range") from None
        raise self.fail(f"refusing to call {func.name if isinstance(func, _Global) else type(func).__name__}")

    def build(self, target: Any, state: Any) -> Any:
        if isinstance(target, _Dtype):
            # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]):
            # only the byte order and a string dtype's item size are read; flags are never used
            if not isinstance(state, tuple) or len(state) < 6 or state[1] not in ("<", ">", "|", "="):
                raise self.fail("refusing a dtype state that is not a plain dtype's")
            if state[2] is not None or state[3] is not None or state[4] is not None:
                raise self.fail("refusing a structured or sub-array dtype")
            if not isinstance(state[5], int) or isinstance(state[5], bool) or not -1 <= state[5] <= 2**31:
                raise self.fail("refusing a dtype state with a bad item size")
            target.byteorder, target.elsize = state[1], state[5]
            return target
        if isinstance(target, _ArrayStub):
            # ndarray.__setstate__: (version, shape, dtype, is_fortran, data) or without the version
            if isinstance(state, tuple) and len(state) == 5:
                state = state[1:]
            if not isinstance(state, tuple) or len(state) != 4 or not isinstance(state[1], _Dtype):
                raise self.fail("refusing an array state that is not (shape, dtype, fortran, data)")
            shape, dtype, fortran, data = state
            return self.array(dtype, shape, data, fortran=bool(fortran))
        raise self.fail(f"refusing BUILD on a {type(target).__name__}")

    def array(self, spec: _Dtype, shape: Any, data: Any, fortran: bool, native: bool = True) -> np.ndarray:
        if (
            not isinstance(shape, tuple)
            or len(shape) > _MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63 for n in shape)
        ):
            raise self.fail(f"refusing array shape {_short(shape)}")
        dt = spec.dtype(self.source)
        count = _prod(shape)
        order: Literal["C", "F"] = "F" if fortran else "C"
        if dt.kind == "O":  # object arrays: only from a list of plain scalars, filled by us
            if not isinstance(data, list) or len(data) != count:
                raise self.fail(f"refusing an object array of shape {shape} not given as a list of {count} items")
            if not all(type(v) in _SCALARS or (isinstance(v, np.generic) and v.dtype.kind != "O") for v in data):
                raise self.fail("refusing an object array holding something other than strings and numbers")
            self.charge(8 * count, "an object array")
            out: np.ndarray = np.empty(count, dtype=object)
            out[:] = data
            return out.reshape(shape, order=order)
        nbytes = count * dt.itemsize
        check_alloc(nbytes, f"{self.source}: array of shape {shape} and dtype {dt}")
        if isinstance(data, str):  # protocol 0-2 pickles from Python 2: bytes as a latin1 str
            try:
                data = data.encode("latin1")
            except UnicodeEncodeError:
                raise self.fail("array data is not a byte string") from None
        if not _is_bytes(data) or len(data) != nbytes:
            size = len(data) if _is_bytes(data) else type(data).__name__
            raise self.fail(f"array of shape {shape} and dtype {dt} needs {nbytes:,} bytes, the file holds {size}")
        self.charge(nbytes, f"array of shape {shape}")
        flat = np.frombuffer(data, dtype=dt, count=count) if count else np.empty(0, dtype=dt)
        out = flat.reshape(shape, order=order)
        # a copy the file cannot alias, in the byte order numpy's own unpickling gives (__setstate__:
        # native; protocol 5's _frombuffer: as stored)
        return out.astype(dt.newbyteorder("="), order=order) if native and not dt.isnative else out.copy(order=order)

    # --- the opcode loop ------------------------------------------------------------------------
    def load(self) -> Any:
        while True:
            op = self.read(1)[0]
            handler = _OPS.get(op)
            if handler is None:
                raise self.fail(f"refusing pickle opcode {bytes([op])!r}")
            result = handler(self)
            if result is _STOP:
                if self.marks:
                    raise self.fail("STOP inside an open MARK")
                return self.pop()
            if result is not None:  # handlers return what they push (None: nothing)
                self.stack.append(result)


_STOP = object()


def _is_bytes(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _as_bytes(value: Any) -> bytes:
    return bytes(value) if isinstance(value, memoryview) else value


def _short(value: Any) -> str:
    return short_repr(value, 60)


def _int_text(r: _Reader, line: bytes) -> Any:
    text = line.rstrip(b"L")
    if text in (b"00", b"01"):
        return text == b"01"
    try:
        return int(text)
    except ValueError:
        raise r.fail("bad integer") from None


def _mark(r: _Reader) -> None:
    r.marks.append(r.stack)
    r.stack = []


def _setitems(r: _Reader, items: list[Any]) -> None:
    target = r.top()
    if not isinstance(target, dict) or len(items) % 2:
        raise r.fail("SETITEMS on something other than a dict")
    try:
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    except TypeError:
        raise r.fail(f"unhashable dict key of type {type(items[i]).__name__}") from None
    r.grow(target, items)


def _appends(r: _Reader, items: list[Any]) -> None:
    target = r.top()
    if not isinstance(target, list):
        raise r.fail("APPENDS on something other than a list")
    target.extend(items)
    r.grow(target, items)


def _additems(r: _Reader, items: list[Any]) -> None:
    target = r.top()
    if not isinstance(target, set):
        raise r.fail("ADDITEMS on something other than a set")
    try:
        target.update(items)
    except TypeError:
        raise r.fail("unhashable set item") from None
    r.grow(target, items)


def _tuple(r: _Reader, items: Any) -> tuple:
    value = tuple(items)
    return r.container(value, value) if value else value


def _memo_get(r: _Reader, index: int) -> Any:
    if index not in r.memo:
        raise r.fail(f"memo index {index} was never stored")
    value = r.memo[index]
    return _NONE if value is None else value  # a handler's None means "pushed nothing"


def _memo_put(r: _Reader, index: int) -> None:
    r.memo[index] = r.top()


def _global(r: _Reader, module: str, name: str) -> _Global:
    parts = module.split(".")
    if len(parts) == 3 and parts[:2] in (["numpy", "core"], ["numpy", "_core"]):
        allowed = {
            ("multiarray", "_reconstruct"): "reconstruct",
            ("multiarray", "scalar"): "scalar",
            ("numeric", "_frombuffer"): "frombuffer",
        }
        if (parts[2], name) in allowed:
            return _Global(allowed[(parts[2], name)])
    plain = {
        ("numpy", "ndarray"): "ndarray",
        ("numpy", "dtype"): "dtype",
        ("_codecs", "encode"): "encode",
        ("builtins", "set"): "set",
        ("builtins", "frozenset"): "frozenset",
        ("builtins", "bytearray"): "bytearray",
        ("builtins", "complex"): "complex",
        ("builtins", "bytes"): "bytes",
        ("__builtin__", "bytes"): "bytes",
        ("__builtin__", "set"): "set",
        ("__builtin__", "frozenset"): "frozenset",
        ("__builtin__", "bytearray"): "bytearray",
        ("__builtin__", "complex"): "complex",
    }
    if (module, name) in plain:
        return _Global(plain[(module, name)])
    raise MsalignError(
        f"refusing to load {r.source}: it references {_short(module)[1:-1]}.{_short(name)[1:-1]}, "
        "which could execute code "
        "(only numpy arrays and plain containers are accepted)"
    )


def _stack_global(r: _Reader) -> _Global:
    name, module = r.pop(), r.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise r.fail("STACK_GLOBAL of non-strings")
    return _global(r, module, name)


def _text_global(r: _Reader) -> _Global:
    module = r.readline().decode("utf-8", "replace")
    name = r.readline().decode("utf-8", "replace")
    return _global(r, module, name)


def _reduce(r: _Reader) -> Any:
    args = r.pop()
    func = r.pop()
    return r.call(func, args)


def _newobj(r: _Reader) -> Any:
    r.pop()
    cls = r.pop()
    raise r.fail(f"refusing to instantiate {getattr(cls, 'name', type(cls).__name__)}")


def _build(r: _Reader) -> None:
    state = r.pop()
    target = r.pop()
    r.stack.append(r.build(target, state))


def _dup(r: _Reader) -> Any:
    value = r.top()
    return _NONE if value is None else value


def _pop(r: _Reader) -> None:
    if r.stack:
        r.stack.pop()
    else:
        r.pop_mark()


def _proto(r: _Reader) -> None:
    version = r.read(1)[0]
    if version > 5:
        raise r.fail(f"unsupported pickle protocol {version}")


def _frame(r: _Reader) -> None:
    r.u("<Q", 8)  # frames are a read-ahead hint; the whole file is mapped already


def _string(r: _Reader) -> str:  # protocol 0 STRING: a quoted Python 2 str, decoded as latin1
    line = r.readline()
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise r.fail("bad STRING opcode")
    try:
        return codecs.escape_decode(line[1:-1])[0].decode("latin1")
    except ValueError:
        raise r.fail("bad STRING escape") from None


def _unicode_text(r: _Reader) -> str:
    try:
        return r.readline().decode("raw-unicode-escape")
    except UnicodeDecodeError:
        raise r.fail("bad UNICODE opcode") from None


def _float_text(r: _Reader) -> float:
    try:
        return float(r.readline())
    except ValueError:
        raise r.fail("bad FLOAT opcode") from None


def _long(r: _Reader, n: int) -> int:
    if n > 1 << 16:  # a 65 KB integer is no feature file's
        raise r.fail(f"integer of {n:,} bytes")
    return int.from_bytes(r.read(n), "little", signed=True)


def _dict_mark(r: _Reader) -> dict:
    items = r.pop_mark()
    if len(items) % 2:
        raise r.fail("DICT with an odd number of items")
    value: dict = {}
    try:
        for i in range(0, len(items), 2):
            value[items[i]] = items[i + 1]
    except TypeError:
        raise r.fail("unhashable dict key") from None
    return r.container(value, items)


def _frozenset_mark(r: _Reader) -> frozenset:
    items = r.pop_mark()
    try:
        value = frozenset(items)
    except TypeError:
        raise r.fail("unhashable frozenset item") from None
    return r.container(value, items)


def _bin_unicode(r: _Reader, fmt: str, n: int) -> str:
    return r.text(r.read(r.u(fmt, n)))


def _bin_bytes(r: _Reader, fmt: str, n: int) -> Any:
    return r.raw(r.read(r.u(fmt, n)))


def _bin_string(r: _Reader, fmt: str, n: int) -> str:  # Python 2 str, decoded as latin1
    chunk = r.read(r.u(fmt, n))
    r.charge(len(chunk), "a string")
    return str(chunk, "latin1")


def _bytearray8(r: _Reader) -> bytearray:
    chunk = r.read(r.u("<Q", 8))
    r.charge(len(chunk), "a bytearray")
    return bytearray(chunk)


def _list_mark(r: _Reader) -> list:
    items = r.pop_mark()
    return r.container(items, items)


def _empty(kind: type) -> Any:
    def op(r: _Reader) -> Any:
        value = kind()
        return r.container(value, ()) if kind is not tuple else value

    return op


def _oob(r: _Reader) -> None:
    raise r.fail("refusing out-of-band pickle buffers")


_OPS: dict[int, Any] = {
    ord("("): _mark,
    ord("."): lambda r: _STOP,
    ord("0"): _pop,
    ord("1"): lambda r: r.pop_mark() and None,
    ord("2"): _dup,
    ord("F"): _float_text,
    ord("I"): lambda r: _int_text(r, r.readline()),
    ord("J"): lambda r: r.u("<i", 4),
    ord("K"): lambda r: r.u("<B", 1),
    ord("L"): lambda r: _int_text(r, r.readline()),
    ord("M"): lambda r: r.u("<H", 2),
    ord("N"): lambda r: _NONE,
    ord("R"): _reduce,
    ord("S"): _string,
    ord("T"): lambda r: _bin_string(r, "<I", 4),
    ord("U"): lambda r: _bin_string(r, "<B", 1),
    ord("V"): _unicode_text,
    ord("X"): lambda r: _bin_unicode(r, "<I", 4),
    ord("a"): lambda r: _appends(r, [r.pop()]),
    ord("b"): _build,
    ord("c"): _text_global,
    ord("d"): _dict_mark,
    ord("}"): _empty(dict),
    ord("e"): lambda r: _appends(r, r.pop_mark()),
    ord("g"): lambda r: _memo_get(r, _int_text(r, r.readline())),
    ord("h"): lambda r: _memo_get(r, r.u("<B", 1)),
    ord("j"): lambda r: _memo_get(r, r.u("<I", 4)),
    ord("l"): _list_mark,
    ord("]"): _empty(list),
    ord("p"): lambda r: _memo_put(r, _int_text(r, r.readline())),
    ord("q"): lambda r: _memo_put(r, r.u("<B", 1)),
    ord("r"): lambda r: _memo_put(r, r.u("<I", 4)),
    ord("s"): lambda r: _setitems(r, [r.pop(), r.pop()][::-1]),
    ord("t"): lambda r: _tuple(r, r.pop_mark()),
    ord(")"): lambda r: (),
    ord("u"): lambda r: _setitems(r, r.pop_mark()),
    ord("G"): lambda r: struct.unpack(">d", r.read(8))[0],
    # protocol 2
    0x80: _proto,
    0x81: _newobj,
    0x85: lambda r: _tuple(r, [r.pop()]),
    0x86: lambda r: _tuple(r, [r.pop(), r.pop()][::-1]),
    0x87: lambda r: _tuple(r, [r.pop(), r.pop(), r.pop()][::-1]),
    0x88: lambda r: _TRUE,
    0x89: lambda r: _FALSE,
    0x8A: lambda r: _long(r, r.u("<B", 1)),
    0x8B: lambda r: _long(r, r.u("<i", 4)),
    # protocol 3
    ord("B"): lambda r: _bin_bytes(r, "<I", 4),
    ord("C"): lambda r: _bin_bytes(r, "<B", 1),
    # protocol 4
    0x8C: lambda r: _bin_unicode(r, "<B", 1),
    0x8D: lambda r: _bin_unicode(r, "<Q", 8),
    0x8E: lambda r: _bin_bytes(r, "<Q", 8),
    0x8F: _empty(set),
    0x90: lambda r: _additems(r, r.pop_mark()),
    0x91: _frozenset_mark,
    0x92: _newobj,
    0x93: _stack_global,
    0x94: lambda r: _memo_put(r, len(r.memo)),
    0x95: _frame,
    # protocol 5
    0x96: _bytearray8,
    0x97: _oob,
    0x98: _oob,
}


class _Const:
    def __init__(self, value: Any):
        self.value = value


# None / True / False as pushed values: handlers return None to mean "pushed nothing", so these
# constants are pushed through sentinels and swapped for the real value below.
_NONE: _Const = _Const(None)
_TRUE: _Const = _Const(True)
_FALSE: _Const = _Const(False)


def _wrap_constants() -> None:
    for code, handler in list(_OPS.items()):

        def wrapped(r: _Reader, handler=handler) -> Any:
            value = handler(r)
            if isinstance(value, _Const):
                r.stack.append(value.value)
                return None
            return value

        _OPS[code] = wrapped


_wrap_constants()


def _check_tree(root: Any, source: str, budget: int) -> Any:
    """Walk the loaded structure without recursion: refuse cycles, nesting beyond MAX_DEPTH and
    more than ``budget`` objects with shared references expanded; turn views of the file into bytes."""
    sizes: dict[int, int] = {}
    depth: dict[int, int] = {}
    kept: list[Any] = []  # keeps walked containers alive so their ids stay unique

    def children(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [*node.keys(), *node.values()]
        if isinstance(node, (list, tuple, set, frozenset)):
            return list(node)
        return []

    stack: list[tuple[Any, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if not isinstance(node, (dict, list, tuple, set, frozenset)):
            continue
        if done:
            active.discard(key)
            kids = [k for k in children(node) if isinstance(k, (dict, list, tuple, set, frozenset))]
            sizes[key] = 1 + len(children(node)) + sum(sizes[id(k)] - 1 for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if sizes[key] > budget:
                raise MsalignError(
                    f"{source}: refusing data whose shared references expand to more than {budget:,} objects "
                    f"(a reference bomb; limit {MAX_EXPANSION} per file byte)"
                )
            if depth[key] > MAX_DEPTH:
                raise MsalignError(f"{source}: refusing data nested more than {MAX_DEPTH} levels deep")
            continue
        if key in sizes:
            continue
        if key in active:
            raise MsalignError(f"{source}: a container refers to itself (cyclic data is not a feature file)")
        active.add(key)
        kept.append(node)
        stack.append((node, True))
        stack.extend(
            (child, False)
            for child in children(node)
            if isinstance(child, (dict, list, tuple, set, frozenset)) and id(child) not in sizes
        )
    return _materialise(root, set())


def _materialise(root: Any, seen: set[int]) -> Any:
    """Replace large byte strings still viewing the mapped file by bytes (lists and dicts in place;
    tuples are rebuilt). Iterative over containers; depth is bounded already."""
    if isinstance(root, memoryview):
        return bytes(root)
    if id(root) in seen or not isinstance(root, (dict, list, tuple)):
        return root
    seen.add(id(root))
    if isinstance(root, dict):
        for k, v in root.items():
            if isinstance(v, (memoryview, dict, list, tuple)):
                root[k] = _materialise(v, seen)
        return root
    if isinstance(root, list):
        for i, v in enumerate(root):
            if isinstance(v, (memoryview, dict, list, tuple)):
                root[i] = _materialise(v, seen)
        return root
    if any(isinstance(v, memoryview) for v in root):
        return tuple(_materialise(v, seen) for v in root)
    for v in root:
        _materialise(v, seen)
    return root


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Interpret the pickle ``data``; see the module docstring for what is accepted."""
    reader = _Reader(data, source, len(data))
    value = reader.load()
    return _check_tree(value, source, max(1024, MAX_EXPANSION * len(data)))


def load_file(path: str | Path) -> Any:
    """Interpret the pickle file ``path``, mapped read-only (arrays are copied out of the mapping,
    so the file's bytes are never held twice in memory)."""
    source = str(path)
    regular_file(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise MsalignError(f"{source}: not a readable pickle (truncated or corrupt: empty file)")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        reader = _Reader(mapped, source, size)
        value = reader.load()
        value = _check_tree(value, source, max(1024, MAX_EXPANSION * size))
        del reader
        return value
    finally:
        with contextlib.suppress(BufferError):  # a view still alive (an error path): the mapping goes with it
            mapped.close()


__all__ = ["MAX_DEPTH", "MAX_EXPANSION", "load_file", "loads"]
