/* Two steps of nvparser._fast in C: splitting a text body and building its
 * typed record. They are optional: _fast.py holds the same two functions in
 * Python (_split_body, _build), used where this module was not compiled,
 * and the tests hold both to the same results. Only these two steps are
 * here because they make and store ~60 objects per record, which is where
 * the pure-Python path spends most of its time; everything that decides
 * (plans, headers, lists, the general path) stays in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* "notification=" */
#define PREFIX_LEN 13

static int
is_key_start(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int
is_key_char(unsigned char c)
{
    return is_key_start(c) || (c >= '0' && c <= '9');
}

/* One ",key=" cut: the comma ends the value before it, the key runs from
 * key to eq, and the next value starts after eq. */
typedef struct {
    Py_ssize_t comma, key, eq;
} Cut;

/* split_body(raw, start) -> (notification, "key1,key2,...", [value1, ...])
 *
 * raw[start:] is "notification=TYPE,key1=value1,...". It is cut at every
 * ",key=" (key: [A-Za-z_][A-Za-z0-9_]*), left to right, exactly as
 * _text._CANDIDATE.split cuts it. Each piece is decoded as strict UTF-8;
 * an invalid one raises UnicodeDecodeError, as bytes.decode would.
 */
static PyObject *
split_body(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split_body(raw: bytes, start: int)");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > size - PREFIX_LEN || memcmp(buf + start, "notification=", PREFIX_LEN) != 0) {
        PyErr_SetString(PyExc_ValueError, "raw[start:] does not open with notification=");
        return NULL;
    }

    Cut stack_cuts[128];
    Cut *cuts = stack_cuts;
    Py_ssize_t ncuts = 0, capacity = 128, keys_len = 0;
    Py_ssize_t i = start + PREFIX_LEN;
    const char *end = buf + size;
    for (;;) {
        const char *comma = memchr(buf + i, ',', end - (buf + i));
        if (comma == NULL)
            break;
        Py_ssize_t c = comma - buf, k = c + 1;
        if (k < size && is_key_start((unsigned char)buf[k])) {
            Py_ssize_t e = k + 1;
            while (e < size && is_key_char((unsigned char)buf[e]))
                e++;
            if (e < size && buf[e] == '=') {
                if (ncuts == capacity) {
                    Cut *grown = PyMem_Malloc(2 * capacity * sizeof(Cut));
                    if (grown == NULL) {
                        if (cuts != stack_cuts)
                            PyMem_Free(cuts);
                        return PyErr_NoMemory();
                    }
                    memcpy(grown, cuts, capacity * sizeof(Cut));
                    if (cuts != stack_cuts)
                        PyMem_Free(cuts);
                    cuts = grown;
                    capacity *= 2;
                }
                cuts[ncuts].comma = c;
                cuts[ncuts].key = k;
                cuts[ncuts].eq = e;
                ncuts++;
                keys_len += e - k + 1;
                i = e + 1;
                continue;
            }
        }
        i = c + 1;
    }

    PyObject *notification = NULL, *keys = NULL, *values = NULL, *result = NULL;
    Py_ssize_t first_end = ncuts ? cuts[0].comma : size;
    notification = PyUnicode_DecodeUTF8(buf + start + PREFIX_LEN, first_end - start - PREFIX_LEN, NULL);
    if (notification == NULL)
        goto done;
    /* Keys are ASCII: one string, joined by ",", built in place. */
    keys = PyUnicode_New(ncuts ? keys_len - 1 : 0, 127);
    values = PyList_New(ncuts);
    if (keys == NULL || values == NULL)
        goto done;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(keys);
    for (Py_ssize_t n = 0; n < ncuts; n++) {
        Py_ssize_t key_len = cuts[n].eq - cuts[n].key;
        if (n)
            *out++ = ',';
        memcpy(out, buf + cuts[n].key, key_len);
        out += key_len;
        Py_ssize_t value_start = cuts[n].eq + 1;
        Py_ssize_t value_end = n + 1 < ncuts ? cuts[n + 1].comma : size;
        PyObject *value = PyUnicode_DecodeUTF8(buf + value_start, value_end - value_start, NULL);
        if (value == NULL)
            goto done;
        PyList_SET_ITEM(values, n, value);
    }
    result = PyTuple_Pack(3, notification, keys, values);
done:
    if (cuts != stack_cuts)
        PyMem_Free(cuts);
    Py_XDECREF(notification);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return result;
}

/* An integer as Go prints one: ASCII digits, maybe a leading "-". */
static PyObject *
go_int(PyObject *text)
{
    if (!PyUnicode_IS_ASCII(text))
        return NULL;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), j = s[0] == '-';
    if (n == j)
        return NULL;
    for (Py_ssize_t k = j; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return NULL;
    }
    if (n - j > 18)  /* may not fit in 64 bits */
        return PyLong_FromString(s, NULL, 10);
    long long number = 0;
    for (Py_ssize_t k = j; k < n; k++)
        number = number * 10 + (s[k] - '0');
    return PyLong_FromLongLong(j ? -number : number);
}

/* Digits from s[k] on; the index after them. */
static Py_ssize_t
skip_digits(const char *s, Py_ssize_t k, Py_ssize_t n)
{
    while (k < n && s[k] >= '0' && s[k] <= '9')
        k++;
    return k;
}

/* A float32 as Go's %v prints it (_gotypes.is_go_float): -?D+(.D+)?(e[-+]D+)?, ASCII. */
static PyObject *
go_float(PyObject *text)
{
    if (!PyUnicode_IS_ASCII(text))
        return NULL;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), k = s[0] == '-', end;
    if ((end = skip_digits(s, k, n)) == k)
        return NULL;
    k = end;
    if (k < n && s[k] == '.') {
        if ((end = skip_digits(s, k + 1, n)) == k + 1)
            return NULL;
        k = end;
    }
    if (k < n && s[k] == 'e') {
        if (k + 1 >= n || (s[k + 1] != '-' && s[k + 1] != '+') || (end = skip_digits(s, k + 2, n)) == k + 2)
            return NULL;
        k = end;
    }
    if (k != n)
        return NULL;
    return PyFloat_FromString(text);
}

static PyObject *
go_bool(PyObject *text)
{
    if (PyUnicode_CompareWithASCIIString(text, "true") == 0)
        Py_RETURN_TRUE;
    if (PyUnicode_CompareWithASCIIString(text, "false") == 0)
        Py_RETURN_FALSE;
    return NULL;
}

static PyObject *space;  /* " " */

/* Whether text is opener + ... + "]"; the length of the opener, or 0. */
static Py_ssize_t
bracketed(PyObject *text, const char *opener)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), open = (Py_ssize_t)strlen(opener);
    if (n < open + 1 || PyUnicode_READ_CHAR(text, n - 1) != ']')
        return 0;
    for (Py_ssize_t k = 0; k < open; k++) {
        if (PyUnicode_READ_CHAR(text, k) != (Py_UCS4)opener[k])
            return 0;
    }
    return open;
}

/* opener + "a b c" + "]" -> ["a", "b", "c"]; NULL without an error when text is not so bracketed. */
static PyObject *
split_bracketed(PyObject *text, const char *opener)
{
    Py_ssize_t open = bracketed(text, opener);
    if (!open)
        return NULL;
    PyObject *inner = PyUnicode_Substring(text, open, PyUnicode_GET_LENGTH(text) - 1);
    if (inner == NULL)
        return NULL;
    PyObject *elements = PyUnicode_Split(inner, space, -1);
    Py_DECREF(inner);
    return elements;
}

/* "[a b c]" -> ["a", "b", "c"]; Go prints [""] as "[]", which gives [""]. */
static PyObject *
go_list(PyObject *text)
{
    return split_bracketed(text, "[");
}

/* "map[k:v k2:v2]" -> {"k": "v", "k2": "v2"}; "map[]" (Go's nil map) -> None. */
static PyObject *
go_map(PyObject *text)
{
    if (PyUnicode_GET_LENGTH(text) == (Py_ssize_t)strlen("map[]") && bracketed(text, "map["))
        Py_RETURN_NONE;
    PyObject *pairs = split_bracketed(text, "map[");
    if (pairs == NULL)
        return NULL;
    PyObject *map = PyDict_New();
    for (Py_ssize_t n = 0; map != NULL && n < PyList_GET_SIZE(pairs); n++) {
        PyObject *pair = PyList_GET_ITEM(pairs, n);
        Py_ssize_t length = PyUnicode_GET_LENGTH(pair);
        Py_ssize_t colon = PyUnicode_FindChar(pair, ':', 0, length, 1);
        PyObject *key = colon < 0 ? (Py_INCREF(pair), pair) : PyUnicode_Substring(pair, 0, colon);
        PyObject *value = colon < 0 ? PyUnicode_New(0, 0) : PyUnicode_Substring(pair, colon + 1, length);
        if (colon == -2 || key == NULL || value == NULL || PyDict_SetItem(map, key, value) < 0)
            Py_CLEAR(map);
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    Py_DECREF(pairs);
    return map;
}

/* Store converter(values[i]) under keys[i] for each index i; 0 when one does not fit. */
static int
store_typed(PyObject *data, PyObject *keys, PyObject *values, PyObject *indexes, PyObject *(*converter)(PyObject *))
{
    Py_ssize_t count = PyTuple_GET_SIZE(indexes), nkeys = PyTuple_GET_SIZE(keys);
    for (Py_ssize_t n = 0; n < count; n++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(indexes, n));
        if (i < 0 || i >= nkeys) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_IndexError, "typed index out of range");
            return -1;
        }
        PyObject *text = PyList_GET_ITEM(values, i);
        if (!PyUnicode_Check(text))
            return 0;
        PyObject *typed = converter(text);
        if (typed == NULL)
            return PyErr_Occurred() ? -1 : 0;  /* NULL without an error: it does not fit */
        int failed = PyDict_SetItem(data, PyTuple_GET_ITEM(keys, i), typed);
        Py_DECREF(typed);
        if (failed)
            return -1;
    }
    return 1;
}

/* build(template, keys, values, ints, floats, bools, lists, maps) -> dict or None
 *
 * A copy of template (which already holds every key, in order) with
 * keys[i] set to values[i]; the values at the indexes in ints, floats,
 * bools, lists and maps converted from what Go's %v prints. None when one
 * of those does not fit: the general path then reads the frame and notes
 * the value.
 */
static PyObject *
build(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyDict_Check(args[0]) || !PyTuple_Check(args[1]) || !PyList_Check(args[2])
            || !PyTuple_Check(args[3]) || !PyTuple_Check(args[4]) || !PyTuple_Check(args[5])
            || !PyTuple_Check(args[6]) || !PyTuple_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError,
                        "build(template: dict, keys: tuple, values: list, ints, floats, bools, lists, maps: tuple)");
        return NULL;
    }
    PyObject *keys = args[1], *values = args[2];
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != nkeys) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        return NULL;
    }
    PyObject *data = PyDict_Copy(args[0]);
    if (data == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        if (PyDict_SetItem(data, PyTuple_GET_ITEM(keys, i), PyList_GET_ITEM(values, i)) < 0)
            goto fail;
    }
    int fits;
    if ((fits = store_typed(data, keys, values, args[3], go_int)) < 1
            || (fits = store_typed(data, keys, values, args[4], go_float)) < 1
            || (fits = store_typed(data, keys, values, args[5], go_bool)) < 1
            || (fits = store_typed(data, keys, values, args[6], go_list)) < 1
            || (fits = store_typed(data, keys, values, args[7], go_map)) < 1) {
        if (fits < 0)
            goto fail;
        Py_DECREF(data);
        Py_RETURN_NONE;
    }
    return data;
fail:
    Py_DECREF(data);
    return NULL;
}

/* -- REST list replies ------------------------------------------------------ */

static const unsigned char *
skip_space(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past the byte c at p and the whitespace after it, or NULL when p does not hold c. */
static const unsigned char *
past(const unsigned char *p, const unsigned char *end, unsigned char c)
{
    return p < end && *p == c ? skip_space(p + 1, end) : NULL;
}

/* Past the JSON string starting at the quote p, or NULL when it does not end. */
static const unsigned char *
skip_string(const unsigned char *p, const unsigned char *end)
{
    for (p++; p < end; p++) {
        const unsigned char *q = memchr(p, '"', end - p);
        if (q == NULL)
            return NULL;
        const unsigned char *b = q;
        while (b > p && b[-1] == '\\')
            b--;
        if ((q - b) % 2 == 0) /* not escaped: an even run of backslashes before it */
            return q + 1;
        p = q;
    }
    return NULL;
}

/* Past the JSON value at p, told apart only by its brackets and strings (the
 * decoder checks the rest), or NULL when it does not end before end. */
static const unsigned char *
skip_value(const unsigned char *p, const unsigned char *end)
{
    Py_ssize_t depth = 0;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            p = skip_string(p, end);
            if (p == NULL)
                return NULL;
            if (depth == 0)
                return p;
            continue;
        }
        if (c == '[' || c == '{')
            depth++;
        else if (c == ']' || c == '}') {
            if (depth == 0)
                return p; /* the end of the enclosing array: a scalar ends here */
            if (--depth == 0)
                return p + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'))
            return p;
        p++;
    }
    return depth == 0 ? p : NULL;
}

/* split_lists(payload: bytes) -> {key: [element JSON bytes, ...]} or None
 * A JSON object whose every member is an array (a NeuVector REST list
 * reply), its arrays cut into their elements' JSON text, undecoded; None
 * for anything else (a member that is not an array, a key with an escape, a
 * cut or trailing text): the caller decodes it whole. A key twice: the last,
 * as a decoder keeps. */
static PyObject *
split_lists(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "split_lists(payload: bytes)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *end = p + PyBytes_GET_SIZE(args[0]);
    PyObject *lists = PyDict_New();
    if (lists == NULL)
        return NULL;
    if ((p = past(skip_space(p, end), end, '{')) == NULL)
        goto decline;
    for (int first_member = 1; p < end && *p != '}'; first_member = 0) {
        if (!first_member && (p = past(p, end, ',')) == NULL)
            goto decline;
        if (p >= end || *p != '"')
            goto decline;
        const unsigned char *key = p + 1, *key_end = skip_string(p, end);
        if (key_end == NULL || memchr(key, '\\', key_end - 1 - key) != NULL)
            goto decline;
        if ((p = past(skip_space(key_end, end), end, ':')) == NULL || (p = past(p, end, '[')) == NULL)
            goto decline;
        PyObject *elements = PyList_New(0);
        if (elements == NULL)
            goto error;
        PyObject *name = PyUnicode_DecodeUTF8((const char *)key, key_end - 1 - key, "strict");
        if (name == NULL) { /* not UTF-8: the decoder's error to give */
            Py_DECREF(elements);
            PyErr_Clear();
            goto decline;
        }
        int failed = PyDict_SetItem(lists, name, elements) < 0;
        Py_DECREF(name);
        Py_DECREF(elements); /* the dict holds it */
        if (failed)
            goto error;
        for (int first_element = 1; p < end && *p != ']'; first_element = 0) {
            if (!first_element && (p = past(p, end, ',')) == NULL)
                goto decline;
            const unsigned char *value_end = skip_value(p, end);
            if (value_end == NULL || value_end == p)
                goto decline;
            PyObject *element = PyBytes_FromStringAndSize((const char *)p, value_end - p);
            if (element == NULL || PyList_Append(elements, element) < 0) {
                Py_XDECREF(element);
                goto error;
            }
            Py_DECREF(element);
            p = skip_space(value_end, end);
        }
        if ((p = past(p, end, ']')) == NULL)
            goto decline;
    }
    if ((p = past(p, end, '}')) == NULL || p != end)
        goto decline;
    return lists;
decline:
    Py_DECREF(lists);
    Py_RETURN_NONE;
error:
    Py_DECREF(lists);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_body", (PyCFunction)(void (*)(void))split_body, METH_FASTCALL,
     "split_body(raw, start) -> (notification, 'key1,key2,...', [value1, ...])"},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL,
     "build(template, keys, values, ints, floats, bools, lists, maps) -> dict or None"},
    {"split_lists", (PyCFunction)(void (*)(void))split_lists, METH_FASTCALL,
     "split_lists(payload) -> {key: [element JSON bytes, ...]} or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "nvparser._speedups",
    "C versions of nvparser._fast._split_body and _build; REST list replies cut into their elements.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    space = PyUnicode_InternFromString(" ");
    if (space == NULL)
        return NULL;
    return PyModule_Create(&module);
}
