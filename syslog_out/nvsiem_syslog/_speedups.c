/* The CEF and LEEF syslog messages of a batch of spooled records, framed,
 * written in C straight from their JSON bytes.
 *
 * Optional: without it (or for any record it declines) the sink decodes the
 * record and writes the same message in Python (rfc5424, pairs.PairEncoder);
 * the tests hold both to the same bytes. Nothing is decided here: Python
 * makes a form per key-and-type sequence (pairs.PairEncoder.native_form) and
 * the header parts per distinct header fields (native.NativeMessages), and
 * this only fills them in and adds the timestamp and the framing. Anything
 * unusual (whitespace, invalid UTF-8, a lone surrogate, a long number, a
 * header field of an odd type, an event time the record does not carry as
 * its reported_timestamp) is declined, so the Python path, which is the
 * reference, handles it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { STR = 1, RAW = 2, MS = 3, CALL = 4, DEV_TIME = 5 };

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

/* Past the bytes of a JSON string that need no second look (not a quote,
 * backslash, control character or byte of 0x80 and up), 8 at a time. */
static inline const unsigned char *
skip_plain(const unsigned char *p, const unsigned char *end)
{
    while (end - p >= 8 && !word_stops_string(load8(p)))
        p += 8;
    while (p < end && !STOP_STRING[*p])
        p++;
    return p;
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
            p = skip_plain(p, end);
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
                while ((q = skip_plain(q, end)) < end && *q != '"') {
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

/* The header fields, in this order; "syslog" (the received header) is found beside them. */
static const char *const HEAD[] = {"notification", "name", "threat_id", "level", "reported_timestamp",
                                   "reported_at"};
enum { NOTIFICATION, NAME, THREAT_ID, LEVEL, REPORTED_TIMESTAMP, REPORTED_AT, NHEAD };
/* Their lengths differ: the one of each length (-1: none). */
static signed char HEAD_BY_LENGTH[32];
#define MAX_MEMBERS 512
#define MAX_RECEIVED 64 /* members of the received header */
/* The last second an RFC 5424 timestamp (and Python's datetime) can say: 9999-12-31T23:59:59Z. */
#define LAST_SECOND 253402300799LL
enum { UNFRAMED = 0, OCTET_COUNTING = 1, LF = 2 };

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

/* The members of the JSON object that is exactly [p, end): 1; 0: declined.
 * With sig, the object's signature (each key, a quote, its value's type) is
 * written to it; -1: out of memory. */
static int
parse_object(const unsigned char *p, const unsigned char *end, Member *members, Py_ssize_t max,
             Py_ssize_t *count, Buf *sig)
{
    Py_ssize_t n = 0;
    if (p >= end || *p != '{')
        return 0;
    p++;
    while (p < end && *p != '}') {
        if (n && *p++ != ',')
            return 0;
        if (n == max || p >= end || *p != '"')
            return 0;
        Member *m = &members[n++];
        m->key = ++p;
        p = skip_plain(p, end);
        if (p >= end || *p != '"')
            return 0; /* keys with escapes or non-ASCII: Python's */
        m->key_len = p - m->key;
        p++;
        if (p >= end || *p++ != ':')
            return 0;
        m->value = p;
        m->type = scan_value(p, end, &p);
        if (!m->type)
            return 0;
        m->value_end = p;
        if (sig != NULL) { /* no key here holds a quote */
            if (buf_grow(sig, m->key_len + 2) < 0)
                return -1;
            memcpy(sig->data + sig->len, m->key, m->key_len);
            sig->data[sig->len + m->key_len] = '"';
            sig->data[sig->len + m->key_len + 1] = m->type;
            sig->len += m->key_len + 2;
        }
    }
    if (p >= end || p + 1 != end)
        return 0;
    *count = n;
    return 1;
}

typedef struct {
    Member members[MAX_MEMBERS];
    Py_ssize_t count;
    const Member *head[NHEAD]; /* the members of HEAD, or NULL */
    const Member *received;    /* "syslog", an object, or NULL */
    Buf sig;
} Record;

static int
is_key(const Member *m, const char *key, Py_ssize_t n)
{
    return m->key_len == n && memcmp(m->key, key, n) == 0;
}

/* A spooled record's members, header fields and signature: 1; 0: declined; -1: out of memory. */
static int
read_record(PyObject *item, Record *r)
{
    r->sig.len = 0;
    if (!PyBytes_Check(item))
        return 0; /* a memoryview...: Python's */
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(item);
    int ok = parse_object(p, p + PyBytes_GET_SIZE(item), r->members, MAX_MEMBERS, &r->count, &r->sig);
    if (ok <= 0)
        return ok;
    memset(r->head, 0, sizeof(r->head));
    r->received = NULL;
    for (Py_ssize_t i = 0; i < r->count; i++) { /* a key twice: the last, as a JSON decoder keeps */
        const Member *m = &r->members[i];
        if (is_key(m, "syslog", 6) && m->type == 'd') {
            r->received = m;
            continue;
        }
        int h = m->key_len < (Py_ssize_t)sizeof(HEAD_BY_LENGTH) ? HEAD_BY_LENGTH[m->key_len] : -1;
        if (h >= 0 && memcmp(m->key, HEAD[h], m->key_len) == 0) {
            if (m->type != 's' && m->type != 'i')
                return 0;
            r->head[h] = m;
        }
    }
    return 1;
}

/* Unix second t (0 to LAST_SECOND) as "YYYY-MM-DDTHH:MM:SS" (19 bytes) into o. */
static void
format_second(long long t, char *o)
{
    /* days to the civil date (proleptic Gregorian), in eras of 400 years from 0000-03-01 */
    long long z = t / 86400 + 719468;
    int second = (int)(t % 86400);
    long long era = z / 146097, day_of_era = z - era * 146097;
    long long year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    long long day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    long long shifted_month = (5 * day_of_year + 2) / 153;
    int day = (int)(day_of_year - (153 * shifted_month + 2) / 5 + 1);
    int month = (int)(shifted_month < 10 ? shifted_month + 3 : shifted_month - 9);
    int year = (int)(year_of_era + era * 400 + (month <= 2));
    int fields[6] = {year, month, day, second / 3600, second / 60 % 60, second % 60};
    static const char separators[] = "--T::";
    for (int i = 0, at = 0; i < 6; i++) {
        int width = i == 0 ? 4 : 2, v = fields[i];
        for (int d = width - 1; d >= 0; d--, v /= 10)
            o[at + d] = (char)('0' + v % 10);
        at += width;
        if (i < 5)
            o[at++] = separators[i];
    }
}

/* The unsigned JSON integer [p, end) (at most 18 digits) when it is 0 to LAST_SECOND, else -1. */
static long long
second_of(const unsigned char *p, const unsigned char *end)
{
    if (p >= end || *p == '-')
        return -1;
    long long t = 0;
    for (; p < end; p++)
        t = t * 10 + (*p - '0');
    return t <= LAST_SECOND ? t : -1;
}

/* The record's own reported_timestamp when the header can say it (1 to
 * LAST_SECOND), else 0: the Python way finds the event time elsewhere. */
static long long
own_time(const Record *r)
{
    const Member *m = r->head[REPORTED_TIMESTAMP];
    long long t = m != NULL && m->type == 'i' ? second_of(m->value, m->value_end) : -1;
    return t > 0 ? t : 0;
}

/* What the message's header depends on, into key: the JSON text of the
 * notification, name, threat_id, level, and the received header's hostname
 * and severity, each followed by a NUL (JSON text holds none). 1; 0: declined. */
static int
head_key(const Record *r, Buf *key)
{
    const unsigned char *from[6] = {NULL}, *to[6] = {NULL};
    for (int h = NOTIFICATION; h <= LEVEL; h++)
        if (r->head[h] != NULL) {
            from[h] = r->head[h]->value;
            to[h] = r->head[h]->value_end;
        }
    if (r->received != NULL) {
        Member received[MAX_RECEIVED];
        Py_ssize_t n;
        if (parse_object(r->received->value, r->received->value_end, received, MAX_RECEIVED, &n, NULL) <= 0)
            return 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int at = is_key(&received[i], "hostname", 8) ? 4 : is_key(&received[i], "severity", 8) ? 5 : -1;
            if (at >= 0) {
                from[at] = received[i].value;
                to[at] = received[i].value_end;
            }
        }
    }
    key->len = 0;
    for (int i = 0; i < 6; i++) {
        if (from[i] != NULL && buf_put(key, (const char *)from[i], to[i] - from[i]) < 0)
            return -1;
        if (buf_put(key, "", 1) < 0)
            return -1;
    }
    return 1;
}

/* The record's pairs as its form says, into out: 1; 0: declined; -1: error. */
static int
write_pairs(PyObject *form, const Record *r, int leef, Buf *out)
{
    const char separator = leef ? '\t' : ' ';
    int first = 1;
    for (Py_ssize_t i = 0; i < r->count; i++) {
        PyObject *entry = PyTuple_GET_ITEM(form, i);
        if (entry == Py_None)
            continue;
        const Member *m = &r->members[i];
        /* bytes: the action, then the prefix; for CALL a tuple of those bytes and the converter */
        PyObject *prefix = PyTuple_Check(entry) ? PyTuple_GET_ITEM(entry, 0) : entry;
        const char *spec = PyBytes_AS_STRING(prefix);
        Py_ssize_t spec_len = PyBytes_GET_SIZE(prefix);
        char action = spec[0];
        Py_ssize_t mark = out->len;
        if (buf_grow(out, spec_len) < 0)
            return -1;
        if (!first)
            out->data[out->len++] = separator;
        memcpy(out->data + out->len, spec + 1, spec_len - 1);
        out->len += spec_len - 1;
        Py_ssize_t value_at = out->len;
        if (action == STR) {
            int ok = emit_string(out, m->value + 1, m->value_end - 1, leef);
            if (ok == -1)
                return 0;
            if (ok < 0)
                return -1;
        } else if (action == RAW) {
            if (escape_into(out, (const char *)m->value, m->value_end - m->value, leef) < 0)
                return -1;
        } else if (action == MS) {
            if (buf_put(out, (const char *)m->value, m->value_end - m->value) < 0)
                return -1;
            if (!(m->value_end - m->value == 1 && m->value[0] == '0') && buf_put(out, "000", 3) < 0)
                return -1;
        } else if (action == DEV_TIME) { /* as pairs.dev_time writes a whole second */
            long long t = m->type == 'i' ? second_of(m->value, m->value_end) : -1;
            if (t < 0)
                return 0;
            if (buf_grow(out, 28) < 0)
                return -1;
            format_second(t, out->data + out->len);
            memcpy(out->data + out->len + 19, ".000+0000", 9);
            out->len += 28;
        } else if (action == CALL) {
            PyObject *value = value_object(m);
            if (value == NULL)
                return -1;
            if (value == Py_None) {
                Py_DECREF(value);
                return 0;
            }
            PyObject *converted = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 1), value);
            Py_DECREF(value);
            if (converted == NULL)
                return -1;
            PyObject *as_text = PyObject_Str(converted);
            Py_DECREF(converted);
            if (as_text == NULL)
                return -1;
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(as_text, &n);
            if (s == NULL) {
                Py_DECREF(as_text);
                PyErr_Clear();
                return 0; /* a lone surrogate: Python's "replace" */
            }
            int ok = escape_into(out, s, n, leef);
            Py_DECREF(as_text);
            if (ok < 0)
                return -1;
        } else {
            PyErr_SetString(PyExc_ValueError, "unknown form action");
            return -1;
        }
        if (out->len == value_at) /* an empty value: the pair is left out */
            out->len = mark;
        else
            first = 0;
    }
    return 1;
}

static PyObject *
bytes_of(const Buf *b)
{
    return PyBytes_FromStringAndSize(b->data, b->len);
}

/* What one call of messages() keeps from record to record: records come in
 * runs of the same signature and header, so the last form and header parts
 * are tried before the dicts. */
typedef struct {
    PyObject *forms, *heads;
    int leef, framing;
    Record record;
    Buf last_sig, key, last_key, text;
    PyObject *form, *parts; /* strong references, or NULL */
    long long stamp_time;
    char stamp[20];
} Writer;

/* dict[key], kept in *held (a strong reference, its key in last), so a run
 * of records with the same key asks the dict once. check() tells a value
 * found to use (1) from one Python keeps for itself (0) or a wrong one (-1,
 * raised). 1: in *held; 0: none (yet); -1: error. */
static int
find_held(PyObject *dict, const Buf *key, Buf *last, PyObject **held, int (*check)(PyObject *, Py_ssize_t),
          Py_ssize_t count)
{
    if (*held != NULL && key->len == last->len && memcmp(key->data, last->data, key->len) == 0)
        return 1;
    Py_CLEAR(*held);
    PyObject *k = bytes_of(key);
    if (k == NULL)
        return -1;
    PyObject *found = PyDict_GetItemWithError(dict, k);
    Py_DECREF(k);
    if (found == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int ok = check(found, count);
    if (ok <= 0)
        return ok;
    Py_INCREF(found);
    *held = found;
    last->len = 0;
    return buf_put(last, key->data, key->len) < 0 ? -1 : 1;
}

/* A form: a tuple of an entry per key (False: records with that signature are Python's). */
static int
check_form(PyObject *form, Py_ssize_t count)
{
    if (!PyTuple_Check(form))
        return 0;
    if (PyTuple_GET_SIZE(form) != count) {
        PyErr_SetString(PyExc_ValueError, "a form for another number of keys");
        return -1;
    }
    return 1;
}

static int
check_parts(PyObject *parts, Py_ssize_t Py_UNUSED(count))
{
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(parts, 0))
        || !PyBytes_Check(PyTuple_GET_ITEM(parts, 1)) || !PyBytes_Check(PyTuple_GET_ITEM(parts, 2))) {
        PyErr_SetString(PyExc_TypeError, "header parts are (before the time, after it, before the pairs) bytes");
        return -1;
    }
    return 1;
}

/* The message of one item, framed: a new reference; Py_None (borrowed): missed; NULL: error. */
static PyObject *
write_message(Writer *w, PyObject *item)
{
    Record *r = &w->record;
    int ok = read_record(item, r);
    long long t = ok > 0 ? own_time(r) : 0;
    if (ok > 0 && t == 0)
        ok = 0;
    if (ok > 0 && w->forms != Py_None)
        ok = find_held(w->forms, &r->sig, &w->last_sig, &w->form, check_form, r->count);
    if (ok > 0)
        ok = head_key(r, &w->key);
    if (ok > 0)
        ok = find_held(w->heads, &w->key, &w->last_key, &w->parts, check_parts, 0);
    /* the body: the record's pairs, or for JSON the record as spooled */
    const char *text = NULL;
    Py_ssize_t text_len = 0;
    if (ok > 0 && w->forms == Py_None) {
        text = PyBytes_AS_STRING(item);
        text_len = PyBytes_GET_SIZE(item);
    } else if (ok > 0) {
        w->text.len = 0;
        ok = write_pairs(w->form, r, w->leef, &w->text);
        text = w->text.data;
        text_len = w->text.len;
    }
    if (ok <= 0)
        return ok < 0 ? NULL : Py_None;
    if (t != w->stamp_time) { /* as rfc5424.timestamp writes a whole second */
        w->stamp_time = t;
        format_second(t, w->stamp);
        w->stamp[19] = 'Z';
    }
    PyObject *before = PyTuple_GET_ITEM(w->parts, 0), *after = PyTuple_GET_ITEM(w->parts, 1),
             *joiner = PyTuple_GET_ITEM(w->parts, 2);
    Py_ssize_t joiner_len = text_len ? PyBytes_GET_SIZE(joiner) : 0;
    Py_ssize_t size = PyBytes_GET_SIZE(before) + 20 + PyBytes_GET_SIZE(after) + joiner_len + text_len;
    char count[24];
    int count_len = w->framing == OCTET_COUNTING ? sprintf(count, "%zd ", size) : 0;
    PyObject *message = PyBytes_FromStringAndSize(NULL, count_len + size + (w->framing == LF));
    if (message == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(message);
    memcpy(o, count, count_len);
    o += count_len;
    memcpy(o, PyBytes_AS_STRING(before), PyBytes_GET_SIZE(before));
    o += PyBytes_GET_SIZE(before);
    memcpy(o, w->stamp, 20);
    o += 20;
    memcpy(o, PyBytes_AS_STRING(after), PyBytes_GET_SIZE(after));
    o += PyBytes_GET_SIZE(after);
    memcpy(o, PyBytes_AS_STRING(joiner), joiner_len);
    o += joiner_len;
    memcpy(o, text, text_len);
    if (w->framing == LF)
        o[text_len] = '\n';
    return message;
}

/* messages(items: sequence, forms: dict | None, heads: dict, leef: bool, framing: int) -> (messages, missed)
 * Each item's message (framing: UNFRAMED, OCTET_COUNTING or LF), or None
 * where the index is in missed: the record is declined, or forms (its
 * signature -> form) or heads (its head_key -> header parts) lacks what it
 * needs, which NativeMessages then learns through fields(). forms None: the
 * JSON format, the record as spooled after the header. */
static PyObject *
messages(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || (!PyDict_Check(args[1]) && args[1] != Py_None) || !PyDict_Check(args[2])
        || !PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "messages(items: sequence, forms: dict | None, heads: dict, leef: bool, framing: int)");
        return NULL;
    }
    Writer *w = PyMem_Malloc(sizeof(Writer)); /* some 40 KiB: not on a thread's stack */
    if (w == NULL)
        return PyErr_NoMemory();
    w->forms = args[1];
    w->heads = args[2];
    w->leef = PyObject_IsTrue(args[3]);
    w->framing = (int)PyLong_AsLong(args[4]);
    buf_init(&w->record.sig);
    buf_init(&w->last_sig);
    buf_init(&w->key);
    buf_init(&w->last_key);
    buf_init(&w->text);
    w->form = w->parts = NULL;
    w->stamp_time = 0;
    PyObject *written = NULL, *missed = NULL, *result = NULL;
    /* a tuple of its own: no Python code run meanwhile (a converter) can change it */
    PyObject *items = PySequence_Tuple(args[0]);
    Py_ssize_t n = items != NULL ? PyTuple_GET_SIZE(items) : 0;
    if (items == NULL || (written = PyList_New(n)) == NULL || (missed = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = write_message(w, PyTuple_GET_ITEM(items, i));
        if (message == NULL)
            goto done;
        if (message == Py_None) {
            PyObject *index = PyLong_FromSsize_t(i);
            int failed = index == NULL || PyList_Append(missed, index) < 0;
            Py_XDECREF(index);
            if (failed)
                goto done;
            Py_INCREF(Py_None);
        }
        PyList_SET_ITEM(written, i, message);
    }
    result = PyTuple_Pack(2, written, missed);
done:
    Py_XDECREF(items);
    Py_XDECREF(written);
    Py_XDECREF(missed);
    Py_XDECREF(w->form);
    Py_XDECREF(w->parts);
    buf_free(&w->record.sig);
    buf_free(&w->last_sig);
    buf_free(&w->key);
    buf_free(&w->last_key);
    buf_free(&w->text);
    PyMem_Free(w);
    return result;
}

/* fields(item: bytes, forms: dict | None)
 *   -> None: the C path cannot write this record
 *    | (notification, name, threat_id, level, syslog JSON bytes or None, head key bytes,
 *       signature bytes, or None when forms holds its form or is None)
 * What NativeMessages needs to learn the form and the header parts of a
 * record messages() missed. */
static PyObject *
fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || (!PyDict_Check(args[1]) && args[1] != Py_None)) {
        PyErr_SetString(PyExc_TypeError, "fields(item: bytes, forms: dict | None)");
        return NULL;
    }
    Record *r = PyMem_Malloc(sizeof(Record));
    if (r == NULL)
        return PyErr_NoMemory();
    buf_init(&r->sig);
    Buf key;
    buf_init(&key);
    PyObject *result = NULL, *signature = NULL;
    int ok = read_record(args[0], r);
    if (ok > 0 && own_time(r) == 0)
        ok = 0;
    if (ok > 0)
        ok = head_key(r, &key);
    if (ok > 0 && (signature = bytes_of(&r->sig)) == NULL)
        ok = -1;
    PyObject *form = args[1]; /* None: JSON, which needs none */
    if (ok > 0 && form != Py_None && (form = PyDict_GetItemWithError(args[1], signature)) == NULL
        && PyErr_Occurred())
        ok = -1;
    if (ok > 0 && form != NULL && form != Py_None && !PyTuple_Check(form))
        ok = 0; /* a form Python keeps for itself */
    if (ok > 0 && (result = PyTuple_New(7)) != NULL) {
        for (int h = NOTIFICATION; h <= LEVEL && result != NULL; h++) {
            PyObject *v = r->head[h] != NULL ? value_object(r->head[h]) : (Py_INCREF(Py_None), Py_None);
            if (v == NULL)
                Py_CLEAR(result);
            else
                PyTuple_SET_ITEM(result, h, v);
        }
        PyObject *syslog = r->received == NULL ? (Py_INCREF(Py_None), Py_None) : PyBytes_FromStringAndSize(
            (const char *)r->received->value, r->received->value_end - r->received->value);
        PyObject *k = bytes_of(&key);
        if (result != NULL && syslog != NULL && k != NULL) {
            PyTuple_SET_ITEM(result, 4, syslog);
            PyTuple_SET_ITEM(result, 5, k);
            PyObject *missing = form != NULL ? Py_None : signature;
            Py_INCREF(missing);
            PyTuple_SET_ITEM(result, 6, missing);
        } else {
            Py_XDECREF(syslog);
            Py_XDECREF(k);
            Py_CLEAR(result);
        }
    }
    Py_XDECREF(signature);
    buf_free(&key);
    buf_free(&r->sig);
    PyMem_Free(r);
    if (ok == 0)
        Py_RETURN_NONE;
    return result;
}

static PyMethodDef methods[] = {
    {"messages", (PyCFunction)(void (*)(void))messages, METH_FASTCALL,
     "messages(items, forms, heads, leef, framing): the syslog messages of spooled records, and the indexes missed."},
    {"fields", (PyCFunction)(void (*)(void))fields, METH_FASTCALL,
     "fields(item, forms): what learning the form and header parts of a record missed takes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "nvsiem_syslog._speedups",
    "CEF and LEEF syslog messages from spooled records' JSON bytes, in C.", -1, methods,
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
        || PyModule_AddIntConstant(m, "MS", MS) < 0 || PyModule_AddIntConstant(m, "CALL", CALL) < 0
        || PyModule_AddIntConstant(m, "DEV_TIME", DEV_TIME) < 0
        || PyModule_AddIntConstant(m, "UNFRAMED", UNFRAMED) < 0
        || PyModule_AddIntConstant(m, "OCTET_COUNTING", OCTET_COUNTING) < 0 || PyModule_AddIntConstant(m, "LF", LF) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
