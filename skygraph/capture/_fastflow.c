/* _fastflow: the flow table's common case at C speed.
 *
 * Owns the per-record loop of the batch path (skygraph/capture/fastpath.py):
 * it walks classic pcap records, recognises the common case --
 * Ethernet/IPv4/{TCP,UDP,ICMPv4} without IP options or fragments, optionally
 * inside one VXLAN tunnel -- computes each packet's Skydive flow key
 * (xxHash64, byte-exact with flowkey.keys) and, for flows the table already
 * holds, sums packets, bytes and TCP flags per flow.  Everything that needs
 * Python goes back to it, one record at a time and in file order: records
 * outside the common case and those creating a flow (`EXACT`), TCP SYN/FIN/RST
 * and ICMP echo while the RTT is unknown (`EVENT`, after the record is summed),
 * and update/expire ticks (`TICK`, before the record).  `flush` hands the sums
 * over (FastPath applies them to the flows and their LRU order).
 *
 * Flows are found through the table (`get(key)`, FlowTable.get) and cached in
 * slots holding a reference to their FlowState; a slot is trusted only in the
 * epoch it was checked in (`invalidate` starts a new one whenever the table may
 * have dropped flows), otherwise it is checked against the table again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FASTFLOW_VERSION 1

enum { R_END = 0, R_TICK = 1, R_EXACT = 2, R_EVENT = 3 };

/* ---- xxHash64 (XXH64, seed 0 for flow keys) ------------------------------- */
static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL,
                      P3 = 0x165667B19E3779F9ULL, P4 = 0x85EBCA77C2B2AE63ULL,
                      P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
         | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48
         | (uint64_t)p[7] << 56;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline uint64_t be48(const uint8_t *p)
{
    return (uint64_t)be16(p) << 32 | be32(p + 2);
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val)
{
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

static uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed)
{
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = xxh_round(v1, le64(p));
            v2 = xxh_round(v2, le64(p + 8));
            v3 = xxh_round(v3, le64(p + 16));
            v4 = xxh_round(v4, le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= xxh_round(0, le64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)le32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* ---- common-case headers ---------------------------------------------------- */
#define VXLAN_HEADERS (14 + 20 + 8 + 8)

typedef struct {
    uint64_t src_mac, dst_mac;
    uint32_t src_ip, dst_ip, total;
    uint16_t sport, dport, icmp_id;
    uint8_t proto, ttl, flags, itype, icode;
} Hdr;

/* Ethernet/IPv4/{TCP,UDP,ICMPv4} with every header inside `avail` bytes and the
 * IP length, distinct endpoints, no options, not a fragment. */
static int parse(const uint8_t *f, int64_t avail, Hdr *h)
{
    if (avail < 42 || f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45)
        return 0;
    if (be16(f + 20) & 0x3FFF)
        return 0;
    uint32_t total = be16(f + 16);
    uint8_t proto = f[23];
    if (proto == 6) {
        if (avail < 54)
            return 0;
        uint32_t doff = (uint32_t)(f[46] >> 4) * 4;
        if (doff < 20 || avail < 34 + (int64_t)doff || total < 20 + doff)
            return 0;
        h->flags = f[47];
    } else if (proto == 17 || proto == 1) {
        if (total < 28)
            return 0;
        h->flags = 0;
    } else {
        return 0;
    }
    h->dst_mac = be48(f);
    h->src_mac = be48(f + 6);
    h->src_ip = be32(f + 26);
    h->dst_ip = be32(f + 30);
    if (h->src_mac == h->dst_mac || h->src_ip == h->dst_ip)
        return 0;
    h->total = total;
    h->proto = proto;
    h->ttl = f[22];
    h->sport = be16(f + 34);
    h->dport = be16(f + 36);
    h->itype = f[34];
    h->icode = f[35];
    h->icmp_id = be16(f + 38);
    return 1;
}

static inline uint8_t *put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
    return p + n;
}

/* flowkey.keys for a common-case sub-packet: the bytes hashed for the table key
 * (without the parent UUID); returns their length.  `vni` >= 0: the outer flow
 * of a VXLAN packet (VNI and destination port instead of the ports). */
static size_t key_bytes(uint8_t *buf, const Hdr *h, int l2, int64_t vni, const uint8_t *fold)
{
    uint8_t *p = buf;
    int swap = h->src_ip > h->dst_ip;
    p = put_be(p, swap ? h->dst_ip : h->src_ip, 4);
    p = put_be(p, swap ? h->src_ip : h->dst_ip, 4);
    p = put_be(p, 1, 8);  /* IPv4 endpoint */
    if (h->proto == 1) {
        uint32_t word = (uint32_t)fold[h->itype] << 24 | (uint32_t)h->icode << 16 | h->icmp_id;
        p = put_be(p, word, 4);
        p = put_be(p, 0, 8);
    } else if (vni >= 0) {
        p = put_be(p, (uint64_t)vni, 4);
        p = put_be(p, h->dport, 2);
        p = put_be(p, 0, 8);
    } else {
        p = put_be(p, swap ? h->dport : h->sport, 2);
        p = put_be(p, swap ? h->sport : h->dport, 2);
        p = put_be(p, h->proto == 6 ? 4 : 5, 8);
    }
    if (l2) {
        uint64_t a = h->src_mac, b = h->dst_mac;
        p = put_be(p, a < b ? a : b, 6);
        p = put_be(p, a < b ? b : a, 6);
        p = put_be(p, 3, 8);  /* MAC endpoint */
    }
    return (size_t)(p - buf);
}

/* ---- slots and the key -> slot map ----------------------------------------- */
typedef struct {
    uint64_t key;
    PyObject *state;  /* FlowState (strong reference); NULL: free */
    uint64_t a_num;   /* the A endpoint (MAC in L2 mode, else IPv4) */
    int64_t ab_pk, ab_by, ba_pk, ba_by, last_idx, last_ms;
    uint64_t uuid;    /* the flow's UUID as a number (hex_id of it) */
    uint32_t epoch;
    int32_t next_free;
    uint8_t ab_fl, ba_fl, depth, dirty, icmp_mode;
    uint8_t uuid_state; /* 0 not read yet, 1 read, 2 not the hex of a 64-bit number */
} Slot;

typedef struct {
    PyObject_HEAD
    PyObject *get;          /* FlowTable.get */
    int l2, tcp_fast, exact_only;
    uint16_t mpls_port;
    uint8_t special[65536];    /* UDP ports whose payload the decoder decodes */
    uint8_t vx_special[65536]; /* the same without the VXLAN ports */
    uint8_t fold[256];         /* ICMPv4 type -> folded ICMPType */
    uint32_t epoch;
    int64_t index;             /* records seen (touch order) */
    int64_t counted;           /* records summed since the last flush */
    Slot *slots;
    Py_ssize_t nslots, slots_cap;
    int32_t free_head;
    Py_ssize_t used;           /* bound slots */
    int32_t *map;              /* open addressing on slot keys; -1 empty */
    size_t map_cap, map_count;
    int32_t *dirty;
    Py_ssize_t ndirty, dirty_cap;
} Tracker;

static PyObject *s_a_num, *s_rtt_start, *s_flow, *s_metric, *s_rtt, *s_uuid;

static int map_grow(Tracker *t)
{
    size_t cap = t->map_cap ? t->map_cap * 2 : 1024;
    int32_t *m = PyMem_Malloc(cap * sizeof(int32_t));
    if (!m) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        m[i] = -1;
    for (size_t i = 0; i < t->map_cap; i++) {
        if (t->map[i] < 0)
            continue;
        size_t j = t->slots[t->map[i]].key & (cap - 1);
        while (m[j] >= 0)
            j = (j + 1) & (cap - 1);
        m[j] = t->map[i];
    }
    PyMem_Free(t->map);
    t->map = m;
    t->map_cap = cap;
    return 0;
}

static int32_t map_find(const Tracker *t, uint64_t key)
{
    if (!t->map_cap)
        return -1;
    size_t mask = t->map_cap - 1, i = key & mask;
    int32_t idx;
    while ((idx = t->map[i]) >= 0) {
        if (t->slots[idx].key == key)
            return idx;
        i = (i + 1) & mask;
    }
    return -1;
}

/* Insert slot `idx` (its key set, not in the map yet). */
static int map_put(Tracker *t, int32_t idx)
{
    if ((t->map_count + 1) * 2 > t->map_cap && map_grow(t) < 0)
        return -1;
    size_t mask = t->map_cap - 1, i = t->slots[idx].key & mask;
    while (t->map[i] >= 0)
        i = (i + 1) & mask;
    t->map[i] = idx;
    t->map_count++;
    return 0;
}

static void map_del(Tracker *t, int32_t idx)
{
    size_t mask = t->map_cap - 1, i = t->slots[idx].key & mask;
    while (t->map[i] >= 0 && t->map[i] != idx)
        i = (i + 1) & mask;
    if (t->map[i] < 0)
        return;
    /* backward-shift deletion (linear probing) */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (t->map[j] < 0)
            break;
        size_t home = t->slots[t->map[j]].key & mask;
        int movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            t->map[i] = t->map[j];
            i = j;
        }
    }
    t->map[i] = -1;
    t->map_count--;
}

static void unbind(Tracker *t, int32_t idx)
{
    Slot *s = &t->slots[idx];
    map_del(t, idx);
    Py_CLEAR(s->state);
    s->dirty = 0;
    s->next_free = t->free_head;
    t->free_head = idx;
    t->used--;
}

static int attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* ICMP echo events still wanted by a flow: 1 requests (no request seen),
 * 2 replies (request seen, RTT unknown), 0 none (RTT known). */
static int icmp_mode_of(PyObject *state)
{
    PyObject *flow = PyObject_GetAttr(state, s_flow);
    if (!flow)
        return -1;
    PyObject *metric = PyObject_GetAttr(flow, s_metric);
    Py_DECREF(flow);
    if (!metric)
        return -1;
    int rtt = attr_true(metric, s_rtt);
    Py_DECREF(metric);
    if (rtt < 0)
        return -1;
    if (rtt)
        return 0;
    int started = attr_true(state, s_rtt_start);
    if (started < 0)
        return -1;
    return started ? 2 : 1;
}

static int32_t bind(Tracker *t, uint64_t key, PyObject *state, int icmp)
{
    PyObject *a = PyObject_GetAttr(state, s_a_num);
    if (!a)
        return -2;
    uint64_t a_num = PyLong_AsUnsignedLongLongMask(a);
    Py_DECREF(a);
    if (a_num == (uint64_t)-1 && PyErr_Occurred())
        return -2;
    int mode = icmp ? icmp_mode_of(state) : 0;
    if (mode < 0)
        return -2;
    int32_t idx;
    if (t->free_head >= 0) {
        idx = t->free_head;
        t->free_head = t->slots[idx].next_free;
    } else {
        if (t->nslots == t->slots_cap) {
            Py_ssize_t cap = t->slots_cap ? t->slots_cap * 2 : 1024;
            Slot *s = PyMem_Realloc(t->slots, (size_t)cap * sizeof(Slot));
            if (!s) {
                PyErr_NoMemory();
                return -2;
            }
            t->slots = s;
            t->slots_cap = cap;
        }
        idx = (int32_t)t->nslots++;
    }
    Slot *s = &t->slots[idx];
    memset(s, 0, sizeof(Slot));
    s->key = key;
    s->next_free = -1;
    if (map_put(t, idx) < 0) {
        s->next_free = t->free_head;
        t->free_head = idx;
        return -2;
    }
    Py_INCREF(state);
    s->state = state;
    s->a_num = a_num;
    s->epoch = t->epoch;
    s->icmp_mode = (uint8_t)mode;
    t->used++;
    return idx;
}

/* The slot of the table's flow for `key`: >= 0, -1 not in the table, -2 error. */
static int32_t lookup(Tracker *t, uint64_t key, int icmp)
{
    int32_t idx = map_find(t, key);
    if (idx >= 0 && t->slots[idx].epoch == t->epoch)
        return idx;
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (!k)
        return -2;
    PyObject *state = PyObject_CallOneArg(t->get, k);
    Py_DECREF(k);
    if (!state)
        return -2;
    if (idx >= 0) {
        if (state == t->slots[idx].state) {
            /* the exact path may have moved the echo state on */
            int mode = icmp ? icmp_mode_of(state) : 0;
            Py_DECREF(state);
            if (mode < 0)
                return -2;
            t->slots[idx].epoch = t->epoch;
            t->slots[idx].icmp_mode = (uint8_t)mode;
            return idx;
        }
        unbind(t, idx);
    }
    if (state == Py_None) {
        Py_DECREF(state);
        return -1;
    }
    idx = bind(t, key, state, icmp);
    Py_DECREF(state);
    return idx;
}

/* The UUID of a slot's flow (the parent of a VXLAN inner flow) as hashed text:
 * its length in `out` (17 bytes), 0 when it is not hex_id of a number (the
 * caller takes the exact path), -1 on error. */
static int slot_uuid(Slot *s, char *out)
{
    if (!s->uuid_state) {
        PyObject *flow = PyObject_GetAttr(s->state, s_flow);
        if (!flow)
            return -1;
        PyObject *uuid = PyObject_GetAttr(flow, s_uuid);
        Py_DECREF(flow);
        if (!uuid)
            return -1;
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(uuid, &n);
        if (!u) {
            Py_DECREF(uuid);
            return -1;
        }
        uint64_t v = 0;
        int ok = n > 0 && n <= 16 && (n == 1 || u[0] != '0');
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            char c = u[i];
            if (c >= '0' && c <= '9')
                v = v << 4 | (uint64_t)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v << 4 | (uint64_t)(c - 'a' + 10);
            else
                ok = 0;
        }
        Py_DECREF(uuid);
        s->uuid = v;
        s->uuid_state = ok ? 1 : 2;
    }
    if (s->uuid_state != 1)
        return 0;
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    uint64_t v = s->uuid;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static int mark(Tracker *t, int32_t idx)
{
    if (t->ndirty == t->dirty_cap) {
        Py_ssize_t cap = t->dirty_cap ? t->dirty_cap * 2 : 1024;
        int32_t *d = PyMem_Realloc(t->dirty, (size_t)cap * sizeof(int32_t));
        if (!d) {
            PyErr_NoMemory();
            return -1;
        }
        t->dirty = d;
        t->dirty_cap = cap;
    }
    t->dirty[t->ndirty++] = idx;
    t->slots[idx].dirty = 1;
    return 0;
}

static inline int add(Tracker *t, int32_t idx, uint64_t src, int64_t size, uint8_t flags,
                      int64_t ms, int depth)
{
    Slot *s = &t->slots[idx];
    if (src == s->a_num) {
        s->ab_pk++;
        s->ab_by += size;
        s->ab_fl |= flags;
    } else {
        s->ba_pk++;
        s->ba_by += size;
        s->ba_fl |= flags;
    }
    s->last_idx = t->index;
    s->last_ms = ms;
    s->depth = (uint8_t)depth;
    if (!s->dirty)
        return mark(t, idx);
    return 0;
}

/* ---- Tracker --------------------------------------------------------------- */
static int Tracker_init(Tracker *t, PyObject *args, PyObject *kw)
{
    static char *names[] = {"get", "l2", "tcp_fast", "exact_only", "mpls_port", "special",
                            "fold", NULL};
    PyObject *get, *special;
    int l2, tcp_fast, exact_only, mpls_port;
    Py_buffer fold;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OpppiOy*", names, &get, &l2, &tcp_fast,
                                     &exact_only, &mpls_port, &special, &fold))
        return -1;
    if (fold.len != 256 || mpls_port <= 0 || mpls_port > 65535) {
        PyBuffer_Release(&fold);
        PyErr_SetString(PyExc_ValueError, "Tracker: fold must be 256 bytes, mpls_port a port");
        return -1;
    }
    memcpy(t->fold, fold.buf, 256);
    PyBuffer_Release(&fold);
    memset(t->special, 0, sizeof t->special);
    PyObject *it = PyObject_GetIter(special);
    if (!it)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        long port = PyLong_AsLong(item);
        Py_DECREF(item);
        if (port == -1 && PyErr_Occurred())
            break;
        if (port >= 0 && port < 65536)
            t->special[port] = 1;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    t->special[mpls_port] = 1;
    memcpy(t->vx_special, t->special, sizeof t->special);
    t->vx_special[4789] = t->vx_special[8472] = 0;
    Py_INCREF(get);
    Py_XSETREF(t->get, get);
    t->l2 = l2;
    t->tcp_fast = tcp_fast;
    t->exact_only = exact_only;
    t->mpls_port = (uint16_t)mpls_port;
    t->free_head = -1;
    return 0;
}

static void clear_slots(Tracker *t)
{
    for (Py_ssize_t i = 0; i < t->nslots; i++)
        Py_CLEAR(t->slots[i].state);
    PyMem_Free(t->slots);
    PyMem_Free(t->map);
    PyMem_Free(t->dirty);
    t->slots = NULL;
    t->map = NULL;
    t->dirty = NULL;
    t->nslots = t->slots_cap = t->ndirty = t->dirty_cap = t->used = 0;
    t->map_cap = t->map_count = 0;
    t->free_head = -1;
}

static int Tracker_traverse(Tracker *t, visitproc visit, void *arg)
{
    Py_VISIT(t->get);
    for (Py_ssize_t i = 0; i < t->nslots; i++)
        Py_VISIT(t->slots[i].state);
    return 0;
}

static int Tracker_clear(Tracker *t)
{
    Py_CLEAR(t->get);
    clear_slots(t);
    return 0;
}

static void Tracker_dealloc(Tracker *t)
{
    PyObject_GC_UnTrack(t);
    Tracker_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *exact(Tracker *t, const uint8_t *rec, int64_t next, int64_t ts, int64_t incl,
                       int64_t orig, const Hdr *fast)
{
    PyObject *frame = PyBytes_FromStringAndSize((const char *)rec + 16, (Py_ssize_t)incl);
    if (!frame)
        return NULL;
    PyObject *info;
    if (fast) {
        uint32_t word = (uint32_t)t->fold[fast->itype] << 24 | (uint32_t)fast->icode << 16
                      | fast->icmp_id;
        info = Py_BuildValue("(IIIIIIO)", fast->total, fast->sport, fast->dport, word,
                             fast->flags, fast->ttl, fast->proto == 6 ? Py_True : Py_False);
        if (!info) {
            Py_DECREF(frame);
            return NULL;
        }
    } else {
        info = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(iLLNLLN)", R_EXACT, (long long)next, (long long)(t->index - 1),
                         frame, (long long)ts, (long long)orig, info);
}

/* run(data, offsets, i, due_ms, little, nanosecond, slot=-1, mode=0): the records
 * whose headers are at data[offsets[i]], data[offsets[i + 1]]... until one needs
 * Python; `slot`/`mode` update the ICMP echo events wanted by the slot of the
 * previous EVENT. */
static PyObject *Tracker_run(Tracker *t, PyObject *args)
{
    Py_buffer buf, offs;
    Py_ssize_t pos;
    long long due;
    int little, nanosecond, eslot = -1, emode = 0;
    if (!PyArg_ParseTuple(args, "y*y*nLpp|ii", &buf, &offs, &pos, &due, &little, &nanosecond,
                          &eslot, &emode))
        return NULL;
    PyObject *out = NULL;
    if (offs.len % 8) {
        PyErr_SetString(PyExc_ValueError, "run: offsets must be 64-bit integers");
        goto done;
    }
    if (eslot >= 0 && eslot < t->nslots && t->slots[eslot].state)
        t->slots[eslot].icmp_mode = (uint8_t)emode;
    const uint8_t *data = buf.buf;
    const int64_t *offsets = offs.buf;
    const Py_ssize_t count = offs.len / 8;
    const int64_t scale = nanosecond ? 1 : 1000;
    uint8_t kb[128];
    if (pos < 0)
        pos = 0;
    while (1) {
        if (pos >= count) {
            out = Py_BuildValue("(in)", R_END, count);
            break;
        }
        int64_t at = offsets[pos];
        if (at < 0 || at + 16 > buf.len) {
            PyErr_Format(PyExc_ValueError, "run: record header at %lld outside the block",
                         (long long)at);
            break;
        }
        const uint8_t *rec = data + at;
        uint32_t sec = little ? le32(rec) : be32(rec);
        uint32_t frac = little ? le32(rec + 4) : be32(rec + 4);
        int64_t incl = little ? le32(rec + 8) : be32(rec + 8);
        int64_t orig = little ? le32(rec + 12) : be32(rec + 12);
        if (at + 16 + incl > buf.len) {
            PyErr_Format(PyExc_ValueError, "run: record at %lld ends outside the block",
                         (long long)at);
            break;
        }
        int64_t ts = (int64_t)sec * 1000000000 + (int64_t)frac * scale;
        int64_t ms = ts / 1000000;
        if (ms >= due) {
            out = Py_BuildValue("(inL)", R_TICK, pos, (long long)ms);
            break;
        }
        Py_ssize_t next = pos + 1;
        const uint8_t *f = rec + 16;
        t->index++;
        Hdr o, in;
        int common = !t->exact_only && parse(f, incl, &o);
        int vx = 0;
        if (common) {
            if (o.proto == 6 && !t->tcp_fast) {
                common = 0;
            } else if (o.proto == 17 && (t->special[o.sport] || t->special[o.dport])) {
                common = 0;
                if ((o.dport == 4789 || o.dport == 8472) && o.dport != t->mpls_port
                    && !t->vx_special[o.sport] && !t->vx_special[o.dport]) {
                    int64_t avail = incl < (int64_t)o.total + 14 ? incl : (int64_t)o.total + 14;
                    if (parse(f + VXLAN_HEADERS, avail - VXLAN_HEADERS, &in)
                        && !(in.proto == 6 && !t->tcp_fast)
                        && !(in.proto == 17 && (t->special[in.sport] || t->special[in.dport])))
                        common = vx = 1;
                }
            }
        }
        if (!common) {
            out = exact(t, rec, next, ts, incl, orig, NULL);
            break;
        }
        int64_t vni = vx ? (int64_t)(be32(f + 46) >> 8) : -1;
        size_t n = key_bytes(kb, &o, t->l2, vni, t->fold);
        int32_t oslot = lookup(t, xxh64(kb, n, 0), !vx && o.proto == 1);
        if (oslot == -2)
            break;
        if (oslot < 0) {
            out = exact(t, rec, next, ts, incl, orig, vx ? NULL : &o);
            break;
        }
        const Hdr *own = &o;
        int32_t slot = oslot;
        if (vx) {
            n = key_bytes(kb, &in, t->l2, -1, t->fold);
            int ulen = slot_uuid(&t->slots[oslot], (char *)kb + n);
            if (ulen < 0)
                break;
            if (ulen == 0) {
                out = exact(t, rec, next, ts, incl, orig, NULL);
                break;
            }
            int32_t islot = lookup(t, xxh64(kb, n + (size_t)ulen, 0), in.proto == 1);
            if (islot == -2)
                break;
            if (islot < 0) {
                out = exact(t, rec, next, ts, incl, orig, NULL);
                break;
            }
            if (add(t, oslot, t->l2 ? o.src_mac : o.src_ip, orig, 0, ms, 0) < 0)
                break;
            own = &in;
            slot = islot;
        }
        uint64_t src = t->l2 ? own->src_mac : own->src_ip;
        if (add(t, slot, src, vx ? orig - VXLAN_HEADERS : orig, own->flags, ms, vx) < 0)
            break;
        t->counted++;
        pos = next;
        Slot *s = &t->slots[slot];
        int event = 0, value = 0;
        if (own->proto == 6) {
            event = own->flags & 0x07; /* FIN, SYN, RST */
            value = own->flags;
        } else if (own->proto == 1 && s->icmp_mode) {
            uint8_t ty = own->itype;
            event = s->icmp_mode == 1 ? (ty == 8 || ty == 128) : (ty == 0 || ty == 129);
            value = ty;
        }
        if (event) {
            out = Py_BuildValue("(inOOiOLii)", R_EVENT, pos, s->state,
                                own->proto == 6 ? Py_True : Py_False, value,
                                src == s->a_num ? Py_True : Py_False, (long long)ts,
                                (int)own->ttl, (int)slot);
            break;
        }
    }
done:
    PyBuffer_Release(&offs);
    PyBuffer_Release(&buf);
    return out;
}

/* flush() -> (list of (state, ab_packets, ab_bytes, ba_packets, ba_bytes, ab_flags,
 * ba_flags, last_index, depth, last_ms), records summed) since the last flush. */
static PyObject *Tracker_flush(Tracker *t, PyObject *unused)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < t->ndirty; i++) {
        Slot *s = &t->slots[t->dirty[i]];
        if (!s->dirty || !s->state)
            continue;
        PyObject *item = Py_BuildValue("(OLLLLiiLiL)", s->state, (long long)s->ab_pk,
                                       (long long)s->ab_by, (long long)s->ba_pk,
                                       (long long)s->ba_by, (int)s->ab_fl, (int)s->ba_fl,
                                       (long long)s->last_idx, (int)s->depth,
                                       (long long)s->last_ms);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
        s->ab_pk = s->ab_by = s->ba_pk = s->ba_by = 0;
        s->ab_fl = s->ba_fl = 0;
        s->dirty = 0;
    }
    t->ndirty = 0;
    long long counted = t->counted;
    t->counted = 0;
    return Py_BuildValue("(NL)", list, counted);
}

static PyObject *Tracker_invalidate(Tracker *t, PyObject *unused)
{
    t->epoch++;
    Py_RETURN_NONE;
}

/* sweep(): drop the slots whose flow left the table. */
static PyObject *Tracker_sweep(Tracker *t, PyObject *unused)
{
    for (Py_ssize_t i = 0; i < t->nslots; i++) {
        Slot *s = &t->slots[i];
        if (!s->state || s->dirty)
            continue;
        PyObject *k = PyLong_FromUnsignedLongLong(s->key);
        if (!k)
            return NULL;
        PyObject *state = PyObject_CallOneArg(t->get, k);
        Py_DECREF(k);
        if (!state)
            return NULL;
        if (state == s->state)
            s->epoch = t->epoch;
        else
            unbind(t, (int32_t)i);
        Py_DECREF(state);
    }
    Py_RETURN_NONE;
}

/* stale(key): the exact path fed this flow; check it again before its next use. */
static PyObject *Tracker_stale(Tracker *t, PyObject *arg)
{
    uint64_t key = PyLong_AsUnsignedLongLongMask(arg);
    if (key == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    int32_t idx = map_find(t, key);
    if (idx >= 0)
        t->slots[idx].epoch = t->epoch - 1;
    Py_RETURN_NONE;
}

static PyObject *Tracker_reset(Tracker *t, PyObject *unused)
{
    clear_slots(t);
    t->counted = 0;
    Py_RETURN_NONE;
}

static PyObject *Tracker_len(Tracker *t, void *closure) { return PyLong_FromSsize_t(t->used); }
static PyObject *Tracker_index(Tracker *t, void *closure) { return PyLong_FromLongLong(t->index); }

static PyMethodDef Tracker_methods[] = {
    {"run", (PyCFunction)Tracker_run, METH_VARARGS,
     "run(data, offsets, i, due_ms, little, nanosecond, slot=-1, mode=0) -> result"},
    {"flush", (PyCFunction)Tracker_flush, METH_NOARGS, "per-flow sums since the last flush"},
    {"invalidate", (PyCFunction)Tracker_invalidate, METH_NOARGS,
     "check every cached flow against the table before its next use"},
    {"sweep", (PyCFunction)Tracker_sweep, METH_NOARGS, "forget flows no longer in the table"},
    {"stale", (PyCFunction)Tracker_stale, METH_O,
     "check the flow of this key against the table before its next use"},
    {"reset", (PyCFunction)Tracker_reset, METH_NOARGS, "forget every cached flow"},
    {NULL}
};

static PyGetSetDef Tracker_getset[] = {
    {"cached", (getter)Tracker_len, NULL, "flows cached in slots", NULL},
    {"index", (getter)Tracker_index, NULL, "records seen", NULL},
    {NULL}
};

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "skygraph.capture._fastflow.Tracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Tracker(get, l2, tcp_fast, exact_only, mpls_port, special, fold)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tracker_init,
    .tp_dealloc = (destructor)Tracker_dealloc,
    .tp_traverse = (traverseproc)Tracker_traverse,
    .tp_clear = (inquiry)Tracker_clear,
    .tp_free = PyObject_GC_Del,
    .tp_methods = Tracker_methods,
    .tp_getset = Tracker_getset,
};

/* ---- module functions --------------------------------------------------------- */
static PyObject *ff_xxh64(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &b, &seed))
        return NULL;
    uint64_t h = xxh64(b.buf, (size_t)b.len, seed);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(h);
}

/* index(data, little) -> (offsets as native int64 bytes, end): the complete records
 * of a buffer starting on a record boundary, and the offset after the last one. */
static PyObject *ff_index(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int little;
    if (!PyArg_ParseTuple(args, "y*p", &b, &little))
        return NULL;
    const uint8_t *d = b.buf;
    Py_ssize_t n = b.len, off = 0, count = 0;
    while (off + 16 <= n) {
        Py_ssize_t next = off + 16 + (Py_ssize_t)(little ? le32(d + off + 8) : be32(d + off + 8));
        if (next > n)
            break;
        count++;
        off = next;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (!out) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int64_t *o = (int64_t *)PyBytes_AS_STRING(out);
    off = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        o[i] = off;
        off += 16 + (Py_ssize_t)(little ? le32(d + off + 8) : be32(d + off + 8));
    }
    PyBuffer_Release(&b);
    return Py_BuildValue("(Nn)", out, off);
}

static PyMethodDef module_methods[] = {
    {"xxh64", ff_xxh64, METH_VARARGS, "xxh64(data, seed=0) -> int (XXH64)"},
    {"index", ff_index, METH_VARARGS, "index(data, little) -> (int64 offsets bytes, end)"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastflow", "The flow table's common case at C speed.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastflow(void)
{
    if (PyType_Ready(&TrackerType) < 0)
        return NULL;
    s_a_num = PyUnicode_InternFromString("a_num");
    s_rtt_start = PyUnicode_InternFromString("rtt_start");
    s_flow = PyUnicode_InternFromString("flow");
    s_metric = PyUnicode_InternFromString("metric");
    s_rtt = PyUnicode_InternFromString("rtt");
    s_uuid = PyUnicode_InternFromString("uuid");
    if (!s_a_num || !s_rtt_start || !s_flow || !s_metric || !s_rtt || !s_uuid)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&TrackerType);
    if (PyModule_AddObject(m, "Tracker", (PyObject *)&TrackerType) < 0
        || PyModule_AddIntConstant(m, "VERSION", FASTFLOW_VERSION) < 0
        || PyModule_AddIntConstant(m, "END", R_END) < 0
        || PyModule_AddIntConstant(m, "TICK", R_TICK) < 0
        || PyModule_AddIntConstant(m, "EXACT", R_EXACT) < 0
        || PyModule_AddIntConstant(m, "EVENT", R_EVENT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
