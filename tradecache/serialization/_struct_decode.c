/* The decoders `msgpack.compile_decoder(from_struct=True)` writes as Python source, run in C.
 *
 * A decoder turns a msgspec Struct (a payload whose shape msgspec checked) into a model event or
 * a map of values, field by field: read the Struct's attribute, try the codec's fast path (a
 * lookup in the codec's cache, a timestamp of digits, a predicate), else call the codec's own
 * `decode(value, key)`, or for an identifier not seen before what that decode does when the
 * text is plainly valid; then build the result (an object whose slots are set one by one, a dict,
 * or a call of the class with keyword arguments) and hand it to `then` if there is one.
 *
 * `StructDecoder(steps, build, then)` is given everything the Python source would close over
 * (the same caches, functions and defaults), so it gives the same results and raises the same
 * errors at the same field; only the interpreter's work per field is gone. Each step kind is one
 * of the fast expressions the codecs declare (`codecs.py`); a schema with any other expression is
 * left to the Python source (see `msgpack.struct_steps`). Where this module is not built, or
 * TRADECACHE_PURE_PYTHON is set, the Python source runs instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* What a step does with the attribute's value `v` (codec env `e`, fallback `decode(v, key)`). */
enum {
    STEP_PASS = 0,         /* v */
    STEP_DICT = 1,         /* e.get(v, MISS), else decode */
    STEP_DICT_NOSPACE = 2, /* e.get(v, MISS) if ' ' not in v, else decode */
    STEP_TIMESTAMP = 3,    /* an int in [0, e], or a str of 1-19 ASCII digits as an int, else decode */
    STEP_PREDICATE = 4,    /* v if e(v), else decode */
    STEP_CALL = 5,         /* decode */
    STEP_IDENTIFIER = 6,   /* e.get(v, MISS), else what an identifier codec's decode does for a plainly valid text */
};

/* An identifier codec's test of a text it has not seen (`identifiers.plain_rule`). */
enum { RULE_NONE = 0, RULE_TEXT = 1, RULE_KEY_PART = 2 };

/* Where a slot's value comes from when the result is built by setting slots. */
enum { SLOT_FIELD = 0, SLOT_FIXED = 1, SLOT_FACTORY = 2 };

/* How the result is built. */
enum { BUILD_DICT = 0, BUILD_SLOTS = 1, BUILD_CALL = 2 };

#define MAX_STEPS 64

typedef struct {
    PyObject *attr;
    int kind;
    int nullable;
    PyObject *env;
    PyObject *decode;
    PyObject *key;
    /* STEP_IDENTIFIER: env is its cache; the class built, its rule, the cache's size. */
    PyObject *cls;
    int rule;
    Py_ssize_t cache_size;
} Step;

typedef struct {
    PyObject *name;
    int source;
    Py_ssize_t field;
    PyObject *value;
} Slot;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t nsteps;
    Step *steps;
    int build;
    PyObject *cls;
    PyObject *new_;
    Py_ssize_t nslots;
    Slot *slots;
    PyObject *then;
} StructDecoder;

static PyObject *space;    /* " " */
static PyObject *zero;     /* 0 */
static PyObject *str_new;  /* str.__new__ */

/* The codec's own decode: `decode(v, key)`. */
static PyObject *fallback(const Step *step, PyObject *v) {
    PyObject *args[2] = {v, step->key};
    return PyObject_Vectorcall(step->decode, args, 2, NULL);
}

static PyObject *from_cache(const Step *step, PyObject *v) {
    PyObject *found = PyDict_GetItemWithError(step->env, v);
    if (found != NULL) {
        return Py_NewRef(found);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return fallback(step, v);
}

/* Whether the text is, with certainty, valid under `rule` (0: not known here; the codec's decode
 * then decides, which tests the same rule itself and may still find it valid). */
static int plainly_valid(int rule, PyObject *v) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(v);
    if (rule == RULE_TEXT) {
        return length > 0;
    }
    if (rule != RULE_KEY_PART || length == 0 || !PyUnicode_IS_ASCII(v)) {
        return 0; /* a non-ASCII text's printability is left to Python's str.isprintable */
    }
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(v);
    for (Py_ssize_t i = 0; i < length; i++) {
        if (chars[i] < 0x20 || chars[i] > 0x7e || chars[i] == ':') {
            return 0;
        }
    }
    return 1;
}

/* What `codecs.identifier`'s decode does with a text its cache does not hold, when the text is
 * plainly valid: `str.__new__(kind, text)`, remembered (the cache emptied first when full). */
static PyObject *identifier(const Step *step, PyObject *v) {
    PyObject *found = PyDict_GetItemWithError(step->env, v);
    if (found != NULL) {
        return Py_NewRef(found);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!PyUnicode_CheckExact(v) || !plainly_valid(step->rule, v)) {
        return fallback(step, v);
    }
    PyObject *args[2] = {step->cls, v};
    PyObject *checked = PyObject_Vectorcall(str_new, args, 2, NULL);
    if (checked == NULL) {
        return NULL;
    }
    if (PyDict_GET_SIZE(step->env) >= step->cache_size) {
        PyDict_Clear(step->env);
    }
    if (PyDict_SetItem(step->env, v, checked) < 0) {
        Py_DECREF(checked);
        return NULL;
    }
    return checked;
}

static PyObject *timestamp(const Step *step, PyObject *v) {
    if (PyLong_CheckExact(v)) {
        int low = PyObject_RichCompareBool(zero, v, Py_LE);
        if (low < 0) {
            return NULL;
        }
        if (low) {
            int high = PyObject_RichCompareBool(v, step->env, Py_LE);
            if (high < 0) {
                return NULL;
            }
            if (high) {
                return Py_NewRef(v);
            }
        }
        return fallback(step, v);
    }
    if (PyUnicode_CheckExact(v) && PyUnicode_IS_ASCII(v)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(v);
        if (length > 0 && length < 20) {
            const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(v);
            unsigned long long total = 0; /* 19 digits stay below 2^64 */
            Py_ssize_t i = 0;
            for (; i < length; i++) {
                if (chars[i] < '0' || chars[i] > '9') {
                    break;
                }
                total = total * 10 + (unsigned long long)(chars[i] - '0');
            }
            if (i == length) {
                return PyLong_FromUnsignedLongLong(total);
            }
        }
    }
    return fallback(step, v);
}

static PyObject *run_step(const Step *step, PyObject *v) {
    if (step->nullable && v == Py_None) {
        return Py_NewRef(Py_None);
    }
    switch (step->kind) {
    case STEP_PASS:
        return Py_NewRef(v);
    case STEP_DICT:
        return from_cache(step, v);
    case STEP_DICT_NOSPACE: {
        int spaced = PySequence_Contains(v, space);
        if (spaced < 0) {
            return NULL;
        }
        return spaced ? fallback(step, v) : from_cache(step, v);
    }
    case STEP_TIMESTAMP:
        return timestamp(step, v);
    case STEP_IDENTIFIER:
        return identifier(step, v);
    case STEP_PREDICATE: {
        PyObject *verdict = PyObject_CallOneArg(step->env, v);
        if (verdict == NULL) {
            return NULL;
        }
        int truth = PyObject_IsTrue(verdict);
        Py_DECREF(verdict);
        if (truth < 0) {
            return NULL;
        }
        return truth ? Py_NewRef(v) : fallback(step, v);
    }
    default:
        return fallback(step, v);
    }
}

static PyObject *build(StructDecoder *self, PyObject **values) {
    if (self->build == BUILD_SLOTS) {
        PyObject *obj = PyObject_CallOneArg(self->new_, self->cls);
        if (obj == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < self->nslots; i++) {
            const Slot *slot = &self->slots[i];
            int failed;
            if (slot->source == SLOT_FIELD) {
                failed = PyObject_SetAttr(obj, slot->name, values[slot->field]);
            } else if (slot->source == SLOT_FIXED) {
                failed = PyObject_SetAttr(obj, slot->name, slot->value);
            } else {
                PyObject *made = PyObject_CallNoArgs(slot->value);
                if (made == NULL) {
                    Py_DECREF(obj);
                    return NULL;
                }
                failed = PyObject_SetAttr(obj, slot->name, made);
                Py_DECREF(made);
            }
            if (failed) {
                Py_DECREF(obj);
                return NULL;
            }
        }
        return obj;
    }
    PyObject *map = PyDict_New();
    if (map == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nsteps; i++) {
        if (PyDict_SetItem(map, self->steps[i].key, values[i]) < 0) {
            Py_DECREF(map);
            return NULL;
        }
    }
    if (self->build == BUILD_DICT) {
        return map;
    }
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) {
        Py_DECREF(map);
        return NULL;
    }
    PyObject *obj = PyObject_Call(self->cls, empty, map);
    Py_DECREF(empty);
    Py_DECREF(map);
    return obj;
}

static PyObject *decode(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    StructDecoder *self = (StructDecoder *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a StructDecoder takes one Struct");
        return NULL;
    }
    PyObject *data = args[0];
    PyObject *values[MAX_STEPS];
    Py_ssize_t done = 0;
    PyObject *result = NULL;
    for (; done < self->nsteps; done++) {
        const Step *step = &self->steps[done];
        PyObject *v = PyObject_GetAttr(data, step->attr);
        if (v == NULL) {
            goto end;
        }
        values[done] = run_step(step, v);
        Py_DECREF(v);
        if (values[done] == NULL) {
            goto end;
        }
    }
    result = build(self, values);
    if (result != NULL && self->then != Py_None) {
        PyObject *checked = PyObject_CallOneArg(self->then, result);
        Py_DECREF(result);
        result = checked;
    }
end:
    for (Py_ssize_t i = 0; i < done; i++) {
        Py_DECREF(values[i]);
    }
    return result;
}

static void clear_steps(StructDecoder *self) {
    for (Py_ssize_t i = 0; i < self->nsteps; i++) {
        Step *step = &self->steps[i];
        Py_XDECREF(step->attr);
        Py_XDECREF(step->env);
        Py_XDECREF(step->decode);
        Py_XDECREF(step->key);
        Py_XDECREF(step->cls);
    }
    PyMem_Free(self->steps);
    self->steps = NULL;
    self->nsteps = 0;
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Py_XDECREF(self->slots[i].name);
        Py_XDECREF(self->slots[i].value);
    }
    PyMem_Free(self->slots);
    self->slots = NULL;
    self->nslots = 0;
}

static void dealloc(StructDecoder *self) {
    clear_steps(self);
    Py_XDECREF(self->cls);
    Py_XDECREF(self->new_);
    Py_XDECREF(self->then);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* StructDecoder(steps, build, cls, new, slots, then):
 *   steps: tuple of (attr, kind, nullable, env, decode, key);
 *   build: BUILD_DICT, BUILD_SLOTS or BUILD_CALL; cls: the class (BUILD_SLOTS, BUILD_CALL);
 *   new: `object.__new__` (BUILD_SLOTS); slots: tuple of (name, source, field index, value);
 *   then: a callable the result is handed to, or None. */
static int init(StructDecoder *self, PyObject *args, PyObject *kwargs) {
    PyObject *steps, *cls, *new_, *slots, *then;
    int build_mode;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "StructDecoder takes positional arguments only");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!iOOO!O", &PyTuple_Type, &steps, &build_mode, &cls, &new_, &PyTuple_Type, &slots,
                          &then)) {
        return -1;
    }
    if (self->steps != NULL || self->slots != NULL) {
        PyErr_SetString(PyExc_TypeError, "a StructDecoder is initialised once");
        return -1;
    }
    Py_ssize_t nsteps = PyTuple_GET_SIZE(steps);
    Py_ssize_t nslots = PyTuple_GET_SIZE(slots);
    if (nsteps > MAX_STEPS) {
        PyErr_Format(PyExc_ValueError, "at most %d steps", MAX_STEPS);
        return -1;
    }
    if (build_mode < BUILD_DICT || build_mode > BUILD_CALL) {
        PyErr_SetString(PyExc_ValueError, "unknown build mode");
        return -1;
    }
    self->steps = PyMem_Calloc((size_t)(nsteps ? nsteps : 1), sizeof(Step));
    self->slots = PyMem_Calloc((size_t)(nslots ? nslots : 1), sizeof(Slot));
    if (self->steps == NULL || self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < nsteps; i++) {
        PyObject *item = PyTuple_GET_ITEM(steps, i);
        PyObject *attr, *env, *decoder, *key, *cls = Py_None;
        int kind, nullable, rule = RULE_NONE;
        Py_ssize_t cache_size = 0;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "UipOOU|Oin", &attr, &kind, &nullable, &env, &decoder,
                                                      &key, &cls, &rule, &cache_size)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a step is a tuple");
            }
            return -1;
        }
        if (kind < STEP_PASS || kind > STEP_IDENTIFIER) {
            PyErr_SetString(PyExc_ValueError, "unknown step kind");
            return -1;
        }
        if ((kind == STEP_DICT || kind == STEP_DICT_NOSPACE || kind == STEP_IDENTIFIER) && !PyDict_CheckExact(env)) {
            PyErr_SetString(PyExc_TypeError, "a cache step's env must be a dict");
            return -1;
        }
        if (kind == STEP_IDENTIFIER &&
            (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyUnicode_Type) || rule < RULE_NONE ||
             rule > RULE_KEY_PART || cache_size < 1)) {
            PyErr_SetString(PyExc_ValueError, "an identifier step needs a str class, a rule and a cache size");
            return -1;
        }
        if (kind == STEP_TIMESTAMP && !PyLong_CheckExact(env)) {
            PyErr_SetString(PyExc_TypeError, "a timestamp step's env must be an int");
            return -1;
        }
        Step *step = &self->steps[i];
        step->attr = Py_NewRef(attr);
        step->kind = kind;
        step->nullable = nullable;
        step->env = Py_NewRef(env);
        step->decode = Py_NewRef(decoder);
        step->key = Py_NewRef(key);
        step->cls = Py_NewRef(cls);
        step->rule = rule;
        step->cache_size = cache_size;
        self->nsteps = i + 1;
    }
    for (Py_ssize_t i = 0; i < nslots; i++) {
        PyObject *item = PyTuple_GET_ITEM(slots, i);
        PyObject *name, *value;
        int source;
        Py_ssize_t field;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "UinO", &name, &source, &field, &value)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a slot is a tuple");
            }
            return -1;
        }
        if (source < SLOT_FIELD || source > SLOT_FACTORY || (source == SLOT_FIELD && (field < 0 || field >= nsteps))) {
            PyErr_SetString(PyExc_ValueError, "a slot's source is out of range");
            return -1;
        }
        Slot *slot = &self->slots[i];
        slot->name = Py_NewRef(name);
        slot->source = source;
        slot->field = field;
        slot->value = Py_NewRef(value);
        self->nslots = i + 1;
    }
    self->build = build_mode;
    self->cls = Py_NewRef(cls);
    self->new_ = Py_NewRef(new_);
    self->then = Py_NewRef(then);
    self->vectorcall = decode;
    return 0;
}

static PyObject *call(PyObject *self, PyObject *args, PyObject *kwargs) {
    return PyVectorcall_Call(self, args, kwargs);
}

static PyTypeObject StructDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tradecache.serialization._struct_decode.StructDecoder",
    .tp_basicsize = sizeof(StructDecoder),
    .tp_dealloc = (destructor)dealloc,
    .tp_vectorcall_offset = offsetof(StructDecoder, vectorcall),
    .tp_call = call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A decoder of one schema's msgspec Struct (see msgpack.compile_decoder).",
    .tp_init = (initproc)init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "tradecache.serialization._struct_decode",
    "msgpack.compile_decoder's Struct decoders, run in C.",
    -1,
    NULL,
};

/* The enums above, as the module's constants (msgpack.compiled_struct_decoder builds with them). */
static const struct {
    const char *name;
    int value;
} constants[] = {
    {"STEP_PASS", STEP_PASS},           {"STEP_DICT", STEP_DICT},         {"STEP_DICT_NOSPACE", STEP_DICT_NOSPACE},
    {"STEP_TIMESTAMP", STEP_TIMESTAMP}, {"STEP_PREDICATE", STEP_PREDICATE}, {"STEP_CALL", STEP_CALL},
    {"STEP_IDENTIFIER", STEP_IDENTIFIER}, {"RULE_NONE", RULE_NONE},       {"RULE_TEXT", RULE_TEXT},
    {"RULE_KEY_PART", RULE_KEY_PART},   {"SLOT_FIELD", SLOT_FIELD},       {"SLOT_FIXED", SLOT_FIXED},
    {"SLOT_FACTORY", SLOT_FACTORY},     {"BUILD_DICT", BUILD_DICT},       {"BUILD_SLOTS", BUILD_SLOTS},
    {"BUILD_CALL", BUILD_CALL},
};

PyMODINIT_FUNC PyInit__struct_decode(void) {
    if (PyType_Ready(&StructDecoderType) < 0) {
        return NULL;
    }
    space = PyUnicode_InternFromString(" ");
    zero = PyLong_FromLong(0);
    str_new = PyObject_GetAttrString((PyObject *)&PyUnicode_Type, "__new__");
    if (space == NULL || zero == NULL || str_new == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&StructDecoderType);
    if (PyModule_AddObject(m, "StructDecoder", (PyObject *)&StructDecoderType) < 0) {
        Py_DECREF(&StructDecoderType);
        Py_DECREF(m);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]); i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
