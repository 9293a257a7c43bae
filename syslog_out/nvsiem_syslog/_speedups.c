/* The CEF extension / LEEF attributes of a spooled record, written in C
 * straight from its JSON bytes.
 *
 * Optional: without it (or for any record it declines) the sink decodes the
 * record and pairs.PairEncoder writes the same text in Python; the tests
 * hold both to the same bytes. Nothing is decided here: Python builds a
 * form per key-and-type sequence (pairs.PairEncoder.native_form) and this
 * only fills it in. Anything unusual (whitespace, invalid UTF-8, a lone
 * surrogate, a long number, a header field of an odd type) is declined, so
 * the Python path, which is the reference, handles it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { STR = 1, RAW = 2, MS = 3, CALL = 4 };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    char stack[4096];
} Buf;

static void
buf_init(Buf *b)
{
    b->data = b->stack;
    b->len = 0;
    b->cap = sizeof(b->stack);
}

static int
buf_grow(Buf *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = (b->len + extra) * 2;
    char *data = b->data == b->stack ? PyMem_Malloc(cap) : PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->data == b->stack)
        memcpy(data, b->stack, b->len);
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static void
buf_free(Buf *b)
{
    if (b->data != b->stack)
        PyMem_Free(b->data);
}

/* Length of a well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static int
utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (end - p < n || p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* The decoded UTF-8 of the JSON string body [p, end) into b: scan_value
 * checked it (UTF-8, only one-letter escapes). -1: out of memory. */
static int
unescape(const unsigned char *p, const unsigned char *end, Buf *b)
{
    if (buf_grow(b, end - p) < 0)
        return -1;
    char *o = b->data + b->len;
    while (p < end) {
        if (*p != '\\') {
            *o++ = (char)*p++;
            continue;
        }
        switch (p[1]) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        default: *o++ = (char)p[1]; /* " \ / */
        }
        p += 2;
    }
    b->len = o - b->data;
    return 0;
}

/* Bytes that stop a plain copy: in CEF text a backslash, '=' and every byte
 * of 0x80 and up (validated as UTF-8) or below 0x20; in LEEF the same but
 * '='. Filled by init_tables. */
static unsigned char STOP_CEF[256], STOP_LEEF[256], STOP_STRING[256];

static void
init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        int special = c == '\\' || c >= 0x80 || c < 0x20;
        STOP_CEF[c] = special || c == '=';
        STOP_LEEF[c] = special;
        STOP_STRING[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
    }
}

/* Eight bytes at a time: whether a word holds a byte that stops a plain
 * copy (0x80 and up, below 0x20, a quote or backslash; '=' for CEF). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_ZERO(v) (((v) - ONES) & ~(v) & HIGHS)
#define HAS_BYTE(v, c) HAS_ZERO((v) ^ (ONES * (unsigned char)(c)))
#define HAS_BELOW_SPACE(v) (((v) - ONES * 0x20) & ~(v) & HIGHS)

static inline uint64_t
load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline int
word_stops_string(uint64_t w)
{
    return ((w & HIGHS) | HAS_BELOW_SPACE(w) | HAS_BYTE(w, '"') | HAS_BYTE(w, '\\')) != 0;
}

static inline int
word_stops_text(uint64_t w, int leef)
{
    return ((w & HIGHS) | HAS_BELOW_SPACE(w) | HAS_BYTE(w, '\\') | (leef ? 0 : HAS_BYTE(w, '='))) != 0;
}

/* One character c (not 0x80 and up) escaped into o; returns the new end. */
static char *
escape_char(char *o, char c, int leef)
{
    switch (c) {
    case '\\': *o++ = '\\'; *o++ = '\\'; break;
    case '\n': *o++ = '\\'; *o++ = 'n'; break;
    case '\r': *o++ = '\\'; *o++ = 'r'; break;
    case '=':
        if (!leef) *o++ = '\\';
        *o++ = c;
        break;
    case '\t':
        if (leef) { *o++ = '\\'; *o++ = 't'; }
        else *o++ = c;
        break;
    default:
        *o++ = c;
    }
    return o;
}

/* The JSON string body [p, end) decoded and escaped into b in one pass.
 * -1 (no exception): declined; -2: out of memory. */
static int
emit_string(Buf *b, const unsigned char *p, const unsigned char *end, int leef)
{
    /* An escape or a byte at most doubles; \uXXXX (6 bytes) makes at most 4. */
    if (buf_grow(b, 2 * (end - p)) < 0)
        return -2;
    const unsigned char *stop = leef ? STOP_LEEF : STOP_CEF;
    char *o = b->data + b->len;
    while (p < end) {
        while (end - p >= 8 && !word_stops_text(load8(p), leef)) {
            memcpy(o, p, 8);
            o += 8;
            p += 8;
        }
        const unsigned char *run = p;
        while (p < end && !stop[*p])
            p++;
        memcpy(o, run, p - run);
        o += p - run;
        if (p >= end)
            break;
        unsigned char c = *p;
        if (c >= 0x80) {
            int n = utf8_length(p, end);
            if (n == 0)
                return -1;
            memcpy(o, p, n);
            o += n;
            p += n;
        } else if (c != '\\') {
            o = escape_char(o, (char)c, leef);
            p++;
        } else {
            /* A JSON escape (scan_value let only the one-letter ones through), as text. */
            char decoded;
            switch (p[1]) {
            case 'b': decoded = '\b'; break;
            case 'f': decoded = '\f'; break;
            case 'n': decoded = '\n'; break;
            case 'r': decoded = '\r'; break;
            case 't': decoded = '\t'; break;
            default: decoded = (char)p[1]; /* " \ / */
            }
            o = escape_char(o, decoded, leef);
            p += 2;
        }
    }
    b->len = o - b->data;
    return 0;
}

/* s[0:n] escaped into b: CEF extension values (\ = LF CR) or LEEF attributes (\ TAB LF CR). */
static int
escape_into(Buf *b, const char *s, Py_ssize_t n, int leef)
{
    if (buf_grow(b, 2 * n) < 0)
        return -1;
    const unsigned char *stop = leef ? STOP_LEEF : STOP_CEF;
    char *o = b->data + b->len;
    Py_ssize_t i = 0;
    while (i < n) {
        while (n - i >= 8 && !word_stops_text(load8((const unsigned char *)s + i), leef)) {
            memcpy(o, s + i, 8);
            o += 8;
            i += 8;
        }
        Py_ssize_t run = i;
        while (i < n && !stop[(unsigned char)s[i]])
            i++;
        memcpy(o, s + run, i - run);
        o += i - run;
        if (i < n) {
            char c = s[i++];
            if ((unsigned char)c >= 0x80)
                *o++ = c; /* UTF-8 already checked */
            else
                o = escape_char(o, c, leef);
        }
    }
    b->len = o - b->data;
    return 0;
}

/* One JSON value: its type ('s' string, 'i' integer, 'f' other number, 'b'
 * true or false, 'n' null, 'l' array, 'd' object) and where it ends. For
 * strings, [start+1, end-1) is the body. 0 when declined. */
static char
scan_value(const unsigned char *p, const unsigned char *end, const unsigned char **after)
{
    if (p >= end)
        return 0;
    unsigned char c = *p;
    if (c == '"') {
        p++;
        while (p < end && *p != '"') {
            while (end - p >= 8 && !word_stops_string(load8(p)))
                p += 8;
            while (p < end && !STOP_STRING[*p])
                p++;
            if (p >= end || *p == '"')
                break;
            if (*p == '\\') {
                /* \uXXXX (control characters, surrogates) is left to Python's decoder */
                if (p + 1 >= end || !strchr("\"\\/bfnrt", p[1]) || p[1] == 0)
                    return 0;
                p += 2;
            } else if (*p < 0x20)
                return 0;
            else {
                int n = utf8_length(p, end);
                if (n == 0)
                    return 0;
                p += n;
            }
        }
        if (p >= end)
            return 0;
        *after = p + 1;
        return 's';
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        const unsigned char *q = p;
        if (*q == '-')
            q++;
        if (q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] >= '0' && q[1] <= '9'))
            return 0;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        char type = 'i';
        if (q < end && (*q == '.' || *q == 'e' || *q == 'E')) {
            type = 'f';
            if (*q == '.') {
                q++;
                if (q >= end || *q < '0' || *q > '9')
                    return 0;
                while (q < end && *q >= '0' && *q <= '9')
                    q++;
            }
            if (q < end && (*q == 'e' || *q == 'E')) {
                q++;
                if (q < end && (*q == '+' || *q == '-'))
                    q++;
                if (q >= end || *q < '0' || *q > '9')
                    return 0;
                while (q < end && *q >= '0' && *q <= '9')
                    q++;
            }
        } else if (q - p > 18)
            return 0; /* beyond 64 bits, perhaps: Python's path decides */
        *after = q;
        return type;
    }
    if (c == '[' || c == '{') {
        int depth = 0;
        const unsigned char *q = p;
        while (q < end) {
            unsigned char d = *q;
            if (d == '"') {
                q++;
                while (q < end && *q != '"') {
                    if (*q == '\\')
                        q++;
                    else if (*q < 0x20)
                        return 0;
                    else if (*q >= 0x80) {
                        int n = utf8_length(q, end);
                        if (n == 0)
                            return 0;
                        q += n - 1;
                    }
                    q++;
                }
                if (q >= end)
                    return 0;
            } else if (d == '[' || d == '{')
                depth++;
            else if (d == ']' || d == '}') {
                if (--depth == 0) {
                    *after = q + 1;
                    return c == '[' ? 'l' : 'd';
                }
            } else if (d <= ' ' || d >= 0x80)
                return 0;
            q++;
        }
        return 0;
    }
    if (end - p >= 4 && memcmp(p, "true", 4) == 0) { *after = p + 4; return 'b'; }
    if (end - p >= 5 && memcmp(p, "false", 5) == 0) { *after = p + 5; return 'b'; }
    if (end - p >= 4 && memcmp(p, "null", 4) == 0) { *after = p + 4; return 'n'; }
    return 0;
}

/* The header fields returned as values, in this order, then "syslog" as its JSON bytes. */
static const char *const HEAD[] = {"notification", "name", "threat_id", "level", "reported_timestamp",
                                   "reported_at"};
#define NHEAD 6
/* Their lengths differ: the one of each length (-1: none). */
static signed char HEAD_BY_LENGTH[32];
#define MAX_MEMBERS 512

typedef struct {
    const unsigned char *key, *value, *value_end;
    Py_ssize_t key_len;
    char type;
} Member;

static PyObject *
value_object(const Member *m)
{
    if (m->type == 's') {
        Buf b;
        buf_init(&b);
        PyObject *s = unescape(m->value + 1, m->value_end - 1, &b) == 0
            ? PyUnicode_DecodeUTF8(b.data, b.len, "strict") : NULL;
        buf_free(&b);
        return s;
    }
    char digits[64];
    Py_ssize_t n = m->value_end - m->value;
    if (n >= (Py_ssize_t)sizeof(digits))
        Py_RETURN_NONE;
    memcpy(digits, m->value, n);
    digits[n] = 0;
    if (m->type == 'i')
        return PyLong_FromString(digits, NULL, 10);
    double d = PyOS_string_to_double(digits, NULL, NULL);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (Py_IS_INFINITY(d))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(d);
}

/* extension(item: bytes, forms: dict, leef: bool)
 *   -> None (declined)
 *    | (notification, name, threat_id, level, reported_timestamp, reported_at, syslog bytes or None,
 *       text bytes or None, signature bytes or None)
 * The text when forms holds a form for the record's signature (its keys and
 * value types), else the signature, for Python to make one. */
static PyObject *
extension(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "extension(item: bytes, forms: dict, leef: bool)");
        return NULL;
    }
    if (!PyBytes_Check(args[0]))
        Py_RETURN_NONE; /* a memoryview...: Python's */
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *end = p + PyBytes_GET_SIZE(args[0]);
    int leef = PyObject_IsTrue(args[2]);
    Member members[MAX_MEMBERS];
    Py_ssize_t count = 0;
    PyObject *result = NULL, *signature = NULL, *text = NULL;
    Buf sig, out;
    buf_init(&sig);
    buf_init(&out);

    if (p >= end || *p != '{')
        goto decline;
    p++;
    while (p < end && *p != '}') {
        if (count && *p++ != ',')
            goto decline;
        if (count == MAX_MEMBERS || p >= end || *p != '"')
            goto decline;
        Member *m = &members[count++];
        m->key = ++p;
        while (p < end && !STOP_STRING[*p])
            p++;
        if (p >= end || *p != '"')
            goto decline; /* keys with escapes or non-ASCII: Python's */
        m->key_len = p - m->key;
        p++;
        if (p >= end || *p++ != ':')
            goto decline;
        m->value = p;
        m->type = scan_value(p, end, &p);
        if (!m->type)
            goto decline;
        m->value_end = p;
        /* key, a quote (no key here holds one), type: one signature per key and type sequence */
        if (buf_grow(&sig, m->key_len + 2) < 0)
            goto error;
        memcpy(sig.data + sig.len, m->key, m->key_len);
        sig.data[sig.len + m->key_len] = '"';
        sig.data[sig.len + m->key_len + 1] = m->type;
        sig.len += m->key_len + 2;
    }
    if (p >= end || p + 1 != end)
        goto decline;

    const Member *head[NHEAD + 1] = {NULL}; /* the members of HEAD, then syslog's */
    for (Py_ssize_t i = 0; i < count; i++) {
        const Member *m = &members[i];
        if (m->key_len == 6 && memcmp(m->key, "syslog", 6) == 0 && m->type == 'd') {
            head[NHEAD] = m;
            continue;
        }
        int h = m->key_len < (Py_ssize_t)sizeof(HEAD_BY_LENGTH) ? HEAD_BY_LENGTH[m->key_len] : -1;
        if (h >= 0 && memcmp(m->key, HEAD[h], m->key_len) == 0) {
            if (m->type != 's' && m->type != 'i')
                goto decline;
            head[h] = m;
        }
    }

    signature = PyBytes_FromStringAndSize(sig.data, sig.len);
    if (signature == NULL)
        goto error;
    PyObject *form = PyDict_GetItemWithError(args[1], signature);
    if (form == NULL && PyErr_Occurred())
        goto error;
    if (form != NULL && !PyTuple_Check(form))
        goto decline; /* a form Python keeps for itself */
    if (form != NULL && PyTuple_GET_SIZE(form) != count) {
        PyErr_SetString(PyExc_ValueError, "a form for another number of keys");
        goto error;
    }
    if (form != NULL) {
        int first = 1;
        const char separator = leef ? '\t' : ' ';
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *entry = PyTuple_GET_ITEM(form, i);
            if (entry == Py_None)
                continue;
            const Member *m = &members[i];
            /* bytes: the action, then the prefix; for CALL a tuple of those bytes and the converter */
            PyObject *prefix = PyTuple_Check(entry) ? PyTuple_GET_ITEM(entry, 0) : entry;
            const char *spec = PyBytes_AS_STRING(prefix);
            Py_ssize_t spec_len = PyBytes_GET_SIZE(prefix);
            char action = spec[0];
            Py_ssize_t mark = out.len;
            if (buf_grow(&out, spec_len) < 0)
                goto error;
            if (!first)
                out.data[out.len++] = separator;
            memcpy(out.data + out.len, spec + 1, spec_len - 1);
            out.len += spec_len - 1;
            Py_ssize_t value_at = out.len;
            if (action == STR) {
                int r = emit_string(&out, m->value + 1, m->value_end - 1, leef);
                if (r == -1)
                    goto decline;
                if (r < 0)
                    goto error;
            } else if (action == RAW) {
                if (escape_into(&out, (const char *)m->value, m->value_end - m->value, leef) < 0)
                    goto error;
            } else if (action == MS) {
                if (buf_put(&out, (const char *)m->value, m->value_end - m->value) < 0)
                    goto error;
                if (!(m->value_end - m->value == 1 && m->value[0] == '0') && buf_put(&out, "000", 3) < 0)
                    goto error;
            } else if (action == CALL) {
                PyObject *value = value_object(m);
                if (value == NULL)
                    goto error;
                if (value == Py_None) {
                    Py_DECREF(value);
                    goto decline;
                }
                PyObject *converted = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 1), value);
                Py_DECREF(value);
                if (converted == NULL)
                    goto error;
                PyObject *as_text = PyObject_Str(converted);
                Py_DECREF(converted);
                if (as_text == NULL)
                    goto error;
                Py_ssize_t n;
                const char *s = PyUnicode_AsUTF8AndSize(as_text, &n);
                if (s == NULL) {
                    Py_DECREF(as_text);
                    PyErr_Clear();
                    goto decline; /* a lone surrogate: Python's "replace" */
                }
                int r = escape_into(&out, s, n, leef);
                Py_DECREF(as_text);
                if (r < 0)
                    goto error;
            } else {
                PyErr_SetString(PyExc_ValueError, "unknown form action");
                goto error;
            }
            if (out.len == value_at) /* an empty value: the pair is left out */
                out.len = mark;
            else
                first = 0;
        }
        text = PyBytes_FromStringAndSize(out.data, out.len);
        if (text == NULL)
            goto error;
    }

    result = PyTuple_New(NHEAD + 3);
    if (result == NULL)
        goto error;
    for (int h = 0; h < NHEAD; h++) {
        PyObject *v;
        if (head[h] == NULL) {
            Py_INCREF(Py_None);
            v = Py_None;
        } else {
            v = value_object(head[h]);
            if (v == NULL)
                goto error;
            if (v == Py_None) {
                Py_DECREF(v);
                goto decline;
            }
        }
        PyTuple_SET_ITEM(result, h, v);
    }
    PyObject *raw = Py_None;
    if (head[NHEAD] != NULL) {
        raw = PyBytes_FromStringAndSize((const char *)head[NHEAD]->value, head[NHEAD]->value_end - head[NHEAD]->value);
        if (raw == NULL)
            goto error;
    } else
        Py_INCREF(raw);
    PyTuple_SET_ITEM(result, NHEAD, raw);
    if (text == NULL) {
        Py_INCREF(Py_None);
        text = Py_None;
    }
    PyTuple_SET_ITEM(result, NHEAD + 1, text);
    text = NULL;
    PyObject *missed = form ? Py_None : signature;
    Py_INCREF(missed);
    PyTuple_SET_ITEM(result, NHEAD + 2, missed);
    Py_DECREF(signature);
    buf_free(&sig);
    buf_free(&out);
    return result;

decline:
    Py_XDECREF(result);
    Py_XDECREF(text);
    Py_XDECREF(signature);
    buf_free(&sig);
    buf_free(&out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(result);
    Py_XDECREF(text);
    Py_XDECREF(signature);
    buf_free(&sig);
    buf_free(&out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"extension", (PyCFunction)(void (*)(void))extension, METH_FASTCALL,
     "extension(item, forms, leef): a spooled record's header fields and CEF extension (LEEF attributes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "nvsiem_syslog._speedups",
    "The CEF extension and LEEF attributes from a spooled record's JSON bytes, in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_tables();
    memset(HEAD_BY_LENGTH, -1, sizeof(HEAD_BY_LENGTH));
    for (int h = 0; h < NHEAD; h++)
        HEAD_BY_LENGTH[strlen(HEAD[h])] = (signed char)h;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STR", STR) < 0 || PyModule_AddIntConstant(m, "RAW", RAW) < 0
        || PyModule_AddIntConstant(m, "MS", MS) < 0 || PyModule_AddIntConstant(m, "CALL", CALL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
