/* _fastflow: the flow table's common case at C speed.
 *
 * Owns the per-record loop of the batch path (skygraph/capture/fastpath.py):
 * it walks blocks of classic pcap records, recognises the common case --
 * Ethernet/IPv4/{TCP,UDP,ICMPv4} without IP options or fragments, optionally
 * inside one VXLAN tunnel -- computes each packet's Skydive flow key
 * (xxHash64, byte-exact with flowkey.keys) and, for flows the table already
 * holds, sums packets, bytes and TCP flags per flow.  What needs Python goes
 * back to it in file order: in a queue handed over with the next result (TCP
 * SYN/FIN/RST events after the record is summed; common-case records creating
 * a flow while the table has room), or as the result itself -- any other
 * record (`EXACT`), ICMP echo while the RTT is unknown (`EVENT`, after the
 * record is summed), update/expire ticks (`TICK`, before the record).
 * `flush` hands the sums over (FastPath applies them to the flows and their
 * LRU order).
 *
 * Flows are found through the table (`get(key)`, FlowTable.get) and cached in
 * slots holding a reference to their FlowState; a slot is trusted only in the
 * epoch it was checked in (`invalidate` starts a new one whenever the table may
 * have dropped flows, `stale` for one flow the exact path fed), otherwise it is
 * checked against the table again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FASTFLOW_VERSION 4

/* results of run(): block done, tick due, record for the exact path, ICMP echo
 * event, sums to apply (a packet counter is near its limit), queue full */
enum { R_END = 0, R_TICK = 1, R_EXACT = 2, R_EVENT = 3, R_FLUSH = 4, R_MORE = 5 };
#define QUEUE_MAX 4096

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

static inline uint8_t *put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static inline uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static inline uint8_t *put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    return put32(p + 4, (uint32_t)v);
}

static inline uint8_t *put48(uint8_t *p, uint64_t v)
{
    put16(p, (uint32_t)(v >> 32));
    return put32(p + 2, (uint32_t)v);
}

/* flowkey.keys for a common-case sub-packet: the bytes hashed for the table key
 * (without the parent UUID); returns their length.  `vni` >= 0: the outer flow
 * of a VXLAN packet (VNI and destination port instead of the ports). */
static size_t key_bytes(uint8_t *buf, const Hdr *h, int l2, int64_t vni, const uint8_t *fold)
{
    uint8_t *p = buf;
    int swap = h->src_ip > h->dst_ip;
    p = put32(p, swap ? h->dst_ip : h->src_ip);
    p = put32(p, swap ? h->src_ip : h->dst_ip);
    p = put64(p, 1);  /* IPv4 endpoint */
    if (h->proto == 1) {
        p = put32(p, (uint32_t)fold[h->itype] << 24 | (uint32_t)h->icode << 16 | h->icmp_id);
        p = put64(p, 0);
    } else if (vni >= 0) {
        p = put32(p, (uint32_t)vni);
        p = put16(p, h->dport);
        p = put64(p, 0);
    } else {
        p = put16(p, swap ? h->dport : h->sport);
        p = put16(p, swap ? h->sport : h->dport);
        p = put64(p, h->proto == 6 ? 4 : 5);
    }
    if (l2) {
        uint64_t a = h->src_mac, b = h->dst_mac;
        p = put48(p, a < b ? a : b);
        p = put48(p, a < b ? b : a);
        p = put64(p, 3);  /* MAC endpoint */
    }
    return (size_t)(p - buf);
}

/* ---- slots and the key -> slot map ----------------------------------------- */
#define B_DEPTH 1  /* the last packet summed was the inner flow of a VXLAN packet */
#define B_DIRTY 2  /* sums not handed over yet */
#define B_ICMP_SHIFT 2 /* ICMP echo events wanted: 0 none, 1 requests, 2 replies */
#define PK_LIMIT 0x80000000u /* packet counts from which the sums are handed over */

typedef struct {  /* what every packet of the flow reads or writes: one cache line */
    uint64_t key;
    uint64_t a_num;  /* the A endpoint (MAC in L2 mode, else IPv4) */
    int64_t ab_by, ba_by, last_idx, last_ms;
    uint32_t ab_pk, ba_pk;
    uint32_t epoch;
    uint8_t ab_fl, ba_fl, bits, uuid_state; /* uuid: 0 not read, 1 read, 2 not usable */
} Hot;

typedef struct {
    PyObject *state; /* FlowState (strong reference); NULL: free */
    uint64_t uuid;   /* the flow's UUID as a number (it is hex_id of one) */
    int32_t next_free;
} Cold;

_Static_assert(sizeof(Hot) == 64, "a slot's hot part is one cache line");

/* NamedTuple classes (Tracker's `types`) and strings (`strings`) */
enum { T_ETH, T_IPV4, T_TCP, T_PORTS, T_ICMP, T_VIEW, T_KEYS, T_COUNT };
enum { S_PATH_TCP, S_PATH_UDP, S_PATH_ICMP, S_TCP, S_UDP, S_ICMP, S_EMPTY, S_COUNT };

typedef struct {
    PyObject_HEAD
    PyObject *get;             /* FlowTable.get */
    int l2, tcp_fast, exact_only;
    uint16_t mpls_port;
    uint64_t special[1024];    /* UDP ports whose payload the decoder decodes (bitmap) */
    uint64_t vx_special[1024]; /* the same without the VXLAN ports */
    uint8_t fold[256];         /* ICMPv4 type -> folded ICMPType */
    uint32_t epoch;
    int64_t index;             /* records seen (touch order) */
    int64_t counted;           /* records summed since the last flush */
    int need_flush;
    Hot *hot;                  /* 64-byte aligned */
    Cold *cold;
    Py_ssize_t nslots, cap, used;
    int32_t free_head;
    int32_t *map;              /* open addressing on slot keys; -1 empty */
    size_t map_cap, map_count;
    int32_t *dirty;
    Py_ssize_t ndirty, dirty_cap;
    Py_buffer data, offs;      /* the loaded block */
    int loaded, little, nanosecond;
    PyObject *types[T_COUNT];  /* decoder/flowkey NamedTuples built for new flows */
    PyObject *strings[S_COUNT];
} Tracker;

static PyObject *s_a_num, *s_rtt_start, *s_flow, *s_metric, *s_rtt, *s_uuid;

static inline int port_in(const uint64_t *set, uint16_t port)
{
    return (int)(set[port >> 6] >> (port & 63) & 1);
}

static inline void port_add(uint64_t *set, long port)
{
    if (port >= 0 && port < 65536)
        set[port >> 6] |= (uint64_t)1 << (port & 63);
}

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
        size_t j = t->hot[t->map[i]].key & (cap - 1);
        while (m[j] >= 0)
            j = (j + 1) & (cap - 1);
        m[j] = t->map[i];
    }
    PyMem_Free(t->map);
    t->map = m;
    t->map_cap = cap;
    return 0;
}

static inline int32_t map_find(const Tracker *t, uint64_t key)
{
    if (!t->map_cap)
        return -1;
    size_t mask = t->map_cap - 1, i = key & mask;
    int32_t idx;
    while ((idx = t->map[i]) >= 0) {
        if (t->hot[idx].key == key)
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
    size_t mask = t->map_cap - 1, i = t->hot[idx].key & mask;
    while (t->map[i] >= 0)
        i = (i + 1) & mask;
    t->map[i] = idx;
    t->map_count++;
    return 0;
}

static void map_del(Tracker *t, int32_t idx)
{
    size_t mask = t->map_cap - 1, i = t->hot[idx].key & mask;
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
        size_t home = t->hot[t->map[j]].key & mask;
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
    map_del(t, idx);
    Py_CLEAR(t->cold[idx].state);
    t->hot[idx].bits = 0;
    t->cold[idx].next_free = t->free_head;
    t->free_head = idx;
    t->used--;
}

static int grow_slots(Tracker *t)
{
    Py_ssize_t cap = t->cap ? t->cap * 2 : 1024;
    Hot *hot = aligned_alloc(64, (size_t)cap * sizeof(Hot));
    Cold *cold = PyMem_Realloc(t->cold, (size_t)cap * sizeof(Cold));
    if (!hot || !cold) {
        free(hot);
        if (cold)
            t->cold = cold;
        PyErr_NoMemory();
        return -1;
    }
    if (t->nslots)
        memcpy(hot, t->hot, (size_t)t->nslots * sizeof(Hot));
    free(t->hot);
    t->hot = hot;
    t->cold = cold;
    t->cap = cap;
    return 0;
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

static inline int icmp_mode(const Hot *h) { return h->bits >> B_ICMP_SHIFT & 3; }

static inline void set_icmp_mode(Hot *h, int mode)
{
    h->bits = (uint8_t)((h->bits & ~(3 << B_ICMP_SHIFT)) | (mode & 3) << B_ICMP_SHIFT);
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
        t->free_head = t->cold[idx].next_free;
    } else {
        if (t->nslots == t->cap && grow_slots(t) < 0)
            return -2;
        idx = (int32_t)t->nslots++;
    }
    Hot *h = &t->hot[idx];
    memset(h, 0, sizeof(Hot));
    h->key = key;
    t->cold[idx].state = NULL;
    t->cold[idx].next_free = -1;
    if (map_put(t, idx) < 0) {
        t->cold[idx].next_free = t->free_head;
        t->free_head = idx;
        return -2;
    }
    Py_INCREF(state);
    t->cold[idx].state = state;
    h->a_num = a_num;
    h->epoch = t->epoch;
    set_icmp_mode(h, mode);
    t->used++;
    return idx;
}

/* The slot of the table's flow for `key`: >= 0, -1 not in the table, -2 error. */
static int32_t lookup(Tracker *t, uint64_t key, int icmp)
{
    int32_t idx = map_find(t, key);
    if (idx >= 0 && t->hot[idx].epoch == t->epoch)
        return idx;
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (!k)
        return -2;
    PyObject *state = PyObject_CallOneArg(t->get, k);
    Py_DECREF(k);
    if (!state)
        return -2;
    if (idx >= 0) {
        if (state == t->cold[idx].state) {
            /* the exact path may have moved the echo state on */
            int mode = icmp ? icmp_mode_of(state) : 0;
            Py_DECREF(state);
            if (mode < 0)
                return -2;
            t->hot[idx].epoch = t->epoch;
            set_icmp_mode(&t->hot[idx], mode);
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
 * its length in `out` (16 bytes), 0 when it is not hex_id of a number (the
 * caller takes the exact path), -1 on error. */
static int slot_uuid(Tracker *t, int32_t idx, char *out)
{
    Hot *h = &t->hot[idx];
    Cold *c = &t->cold[idx];
    if (!h->uuid_state) {
        PyObject *flow = PyObject_GetAttr(c->state, s_flow);
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
            char ch = u[i];
            if (ch >= '0' && ch <= '9')
                v = v << 4 | (uint64_t)(ch - '0');
            else if (ch >= 'a' && ch <= 'f')
                v = v << 4 | (uint64_t)(ch - 'a' + 10);
            else
                ok = 0;
        }
        Py_DECREF(uuid);
        c->uuid = v;
        h->uuid_state = ok ? 1 : 2;
    }
    if (h->uuid_state != 1)
        return 0;
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    uint64_t v = c->uuid;
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
    t->hot[idx].bits |= B_DIRTY;
    return 0;
}

static inline int add(Tracker *t, int32_t idx, uint64_t src, int64_t size, uint8_t flags,
                      int64_t index, int64_t ms, int depth)
{
    Hot *h = &t->hot[idx];
    if (src == h->a_num) {
        h->ab_pk++;
        h->ab_by += size;
        h->ab_fl |= flags;
    } else {
        h->ba_pk++;
        h->ba_by += size;
        h->ba_fl |= flags;
    }
    if (h->ab_pk >= PK_LIMIT || h->ba_pk >= PK_LIMIT)
        t->need_flush = 1;
    h->last_idx = index;
    h->last_ms = ms;
    h->bits = (uint8_t)((h->bits & ~B_DEPTH) | (depth ? B_DEPTH : 0));
    if (!(h->bits & B_DIRTY))
        return mark(t, idx);
    return 0;
}

/* ---- Tracker --------------------------------------------------------------- */
static int Tracker_init(Tracker *t, PyObject *args, PyObject *kw)
{
    static char *names[] = {"get", "l2", "tcp_fast", "exact_only", "mpls_port", "special",
                            "fold", "types", "strings", NULL};
    PyObject *get, *special, *types, *strings;
    int l2, tcp_fast, exact_only, mpls_port;
    Py_buffer fold;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OpppiOy*O!O!", names, &get, &l2, &tcp_fast,
                                     &exact_only, &mpls_port, &special, &fold, &PyTuple_Type,
                                     &types, &PyTuple_Type, &strings))
        return -1;
    if (PyTuple_GET_SIZE(types) != T_COUNT || PyTuple_GET_SIZE(strings) != S_COUNT) {
        PyBuffer_Release(&fold);
        PyErr_SetString(PyExc_ValueError, "Tracker: unexpected types or strings");
        return -1;
    }
    for (int i = 0; i < T_COUNT; i++) {
        PyObject *tp = PyTuple_GET_ITEM(types, i);
        if (!PyType_Check(tp) || !PyType_IsSubtype((PyTypeObject *)tp, &PyTuple_Type)) {
            PyBuffer_Release(&fold);
            PyErr_SetString(PyExc_TypeError, "Tracker: types must be tuple subclasses");
            return -1;
        }
        Py_INCREF(tp);
        Py_XSETREF(t->types[i], tp);
    }
    for (int i = 0; i < S_COUNT; i++) {
        PyObject *str = PyTuple_GET_ITEM(strings, i);
        Py_INCREF(str);
        Py_XSETREF(t->strings[i], str);
    }
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
        port_add(t->special, port);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    port_add(t->special, mpls_port);
    memcpy(t->vx_special, t->special, sizeof t->special);
    t->vx_special[4789 >> 6] &= ~((uint64_t)1 << (4789 & 63));
    t->vx_special[8472 >> 6] &= ~((uint64_t)1 << (8472 & 63));
    Py_INCREF(get);
    Py_XSETREF(t->get, get);
    t->l2 = l2;
    t->tcp_fast = tcp_fast;
    t->exact_only = exact_only;
    t->mpls_port = (uint16_t)mpls_port;
    t->free_head = -1;
    return 0;
}

static void release(Tracker *t)
{
    if (t->loaded) {
        PyBuffer_Release(&t->data);
        PyBuffer_Release(&t->offs);
        t->loaded = 0;
    }
}

static void clear_slots(Tracker *t)
{
    for (Py_ssize_t i = 0; i < t->nslots; i++)
        Py_CLEAR(t->cold[i].state);
    free(t->hot);
    PyMem_Free(t->cold);
    PyMem_Free(t->map);
    PyMem_Free(t->dirty);
    t->hot = NULL;
    t->cold = NULL;
    t->map = NULL;
    t->dirty = NULL;
    t->nslots = t->cap = t->ndirty = t->dirty_cap = t->used = 0;
    t->map_cap = t->map_count = 0;
    t->free_head = -1;
}

static int Tracker_traverse(Tracker *t, visitproc visit, void *arg)
{
    Py_VISIT(t->get);
    for (int i = 0; i < T_COUNT; i++)
        Py_VISIT(t->types[i]);
    for (int i = 0; i < S_COUNT; i++)
        Py_VISIT(t->strings[i]);
    for (Py_ssize_t i = 0; i < t->nslots; i++)
        Py_VISIT(t->cold[i].state);
    return 0;
}

static int Tracker_clear(Tracker *t)
{
    release(t);
    Py_CLEAR(t->get);
    for (int i = 0; i < T_COUNT; i++)
        Py_CLEAR(t->types[i]);
    for (int i = 0; i < S_COUNT; i++)
        Py_CLEAR(t->strings[i]);
    clear_slots(t);
    return 0;
}

static void Tracker_dealloc(Tracker *t)
{
    PyObject_GC_UnTrack(t);
    Tracker_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* load(data, offsets, little, nanosecond): the block run() walks (held until the
 * next load or release()); offsets: native 64-bit integers. */
static PyObject *Tracker_load(Tracker *t, PyObject *args)
{
    PyObject *data, *offs;
    int little, nanosecond;
    if (!PyArg_ParseTuple(args, "OOpp", &data, &offs, &little, &nanosecond))
        return NULL;
    release(t);
    if (PyObject_GetBuffer(data, &t->data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(offs, &t->offs, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&t->data);
        return NULL;
    }
    t->loaded = 1;
    if (t->offs.len % 8) {
        release(t);
        PyErr_SetString(PyExc_ValueError, "load: offsets must be 64-bit integers");
        return NULL;
    }
    t->little = little;
    t->nanosecond = nanosecond;
    Py_RETURN_NONE;
}

static PyObject *Tracker_release(Tracker *t, PyObject *unused)
{
    release(t);
    Py_RETURN_NONE;
}

static int queue_add(PyObject **queue, PyObject *item)
{
    if (!item)
        return -1;
    if (!*queue && !(*queue = PyList_New(0))) {
        Py_DECREF(item);
        return -1;
    }
    int r = PyList_Append(*queue, item);
    Py_DECREF(item);
    return r;
}

/* An instance of a NamedTuple class from `n` new references (stolen; NULL: error). */
static PyObject *named(PyObject *type, Py_ssize_t n, ...)
{
    va_list ap;
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *out = tp->tp_alloc(tp, n);
    int failed = out == NULL;
    va_start(ap, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = va_arg(ap, PyObject *);
        if (!item)
            failed = 1;
        if (out && item)
            PyTuple_SET_ITEM(out, i, item);
        else
            Py_XDECREF(item);
    }
    va_end(ap);
    if (failed) {
        Py_XDECREF(out);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return NULL;
    }
    return out;
}

static inline PyObject *u64(uint64_t v) { return PyLong_FromUnsignedLongLong(v); }
static inline PyObject *ref(PyObject *o) { return Py_NewRef(o); }

/* (View, Keys, LayersPath) of a common-case frame, as decoder.decode + packet.view
 * and flowkey.keys give them (fastpath.common_view): what FlowTable.feed_view takes.
 * `kb`/`n`: the key bytes (with the MACs in L2 mode). */
static PyObject *new_flow_info(const Tracker *t, const uint8_t *f, int64_t incl, const Hdr *h,
                               const uint8_t *kb, size_t n)
{
    PyObject *const *T = t->types, *const *S = t->strings;
    PyObject *eth = named(T[T_ETH], 3, PyBytes_FromStringAndSize((const char *)f + 6, 6),
                          PyBytes_FromStringAndSize((const char *)f, 6), PyLong_FromLong(0x0800));
    PyObject *ip = named(T[T_IPV4], 9, PyBytes_FromStringAndSize((const char *)f + 26, 4),
                         PyBytes_FromStringAndSize((const char *)f + 30, 4), u64(h->total),
                         PyLong_FromLong(h->ttl), PyLong_FromLong(h->proto), PyLong_FromLong(0),
                         ref(Py_False), PyLong_FromLong(0), PyLong_FromLong(20));
    PyObject *view, *path;
    if (h->proto == 1) {
        PyObject *icmp = named(T[T_ICMP], 3, PyLong_FromLong(h->itype),
                               PyLong_FromLong(h->icode), PyLong_FromLong(h->icmp_id));
        view = named(T[T_VIEW], 10, eth, ip, ref(Py_None), ref(S[S_EMPTY]), icmp, ref(Py_None),
                     ref(Py_None), ref(S[S_ICMP]), PyLong_FromLong(0), PyLong_FromLong(0));
        path = S[S_PATH_ICMP];
    } else if (h->proto == 6) {
        int64_t doff = (int64_t)(f[46] >> 4) * 4;
        int64_t end = incl < 14 + (int64_t)h->total ? incl : 14 + (int64_t)h->total;
        int64_t payload = end - 34 - doff > 0 ? end - 34 - doff : 0;
        PyObject *tcp = named(T[T_TCP], 6, PyLong_FromLong(h->sport), PyLong_FromLong(h->dport),
                              PyLong_FromLong(0), PyLong_FromLong(0),
                              PyLong_FromLong(h->flags | (f[46] & 1) << 8),
                              PyLong_FromLongLong(payload));
        view = named(T[T_VIEW], 10, eth, ip, tcp, ref(S[S_TCP]), ref(Py_None), ref(Py_None),
                     ref(Py_None), ref(S[S_TCP]), PyLong_FromLong(0), PyLong_FromLong(0));
        path = S[S_PATH_TCP];
    } else {
        PyObject *udp = named(T[T_PORTS], 2, PyLong_FromLong(h->sport),
                              PyLong_FromLong(h->dport));
        view = named(T[T_VIEW], 10, eth, ip, udp, ref(S[S_UDP]), ref(Py_None), ref(Py_None),
                     ref(Py_None), ref(S[S_UDP]), PyLong_FromLong(0), PyLong_FromLong(0));
        path = S[S_PATH_UDP];
    }
    if (!view)
        return NULL;
    uint64_t l3 = xxh64(kb, t->l2 ? n - 20 : n, 0), l2 = t->l2 ? xxh64(kb, n, 0) : l3;
    PyObject *keys = named(T[T_KEYS], 3, u64(l2), u64(l3), u64(l2));
    if (!keys) {
        Py_DECREF(view);
        return NULL;
    }
    return Py_BuildValue("(NNO)", view, keys, path);
}

/* A record's common case, classified ahead of its turn (the lookups of the next
 * records are prefetched while the current one is processed). */
typedef struct {
    Py_ssize_t pos;  /* record the entry holds; -1 none */
    int common, vx;  /* common case; inside VXLAN */
    Hdr o, in;       /* outer (or only) headers; inner ones */
    uint64_t key;    /* table key of the outer (or only) flow */
    size_t n;        /* its key bytes */
    uint8_t kb[64];
} Ahead;

static void classify(const Tracker *t, const uint8_t *f, int64_t incl, Ahead *a)
{
    a->common = a->vx = 0;
    Hdr *o = &a->o, *in = &a->in;
    if (!parse(f, incl, o))
        return;
    if (o->proto == 6 && !t->tcp_fast)
        return;
    if (o->proto == 17 && (port_in(t->special, o->sport) || port_in(t->special, o->dport))) {
        /* VXLAN to 4789/8472 (not the MPLS port) carrying a common-case packet whose
         * headers fit in the capture and in the outer IP length */
        if (!((o->dport == 4789 || o->dport == 8472) && o->dport != t->mpls_port
              && !port_in(t->vx_special, o->sport) && !port_in(t->vx_special, o->dport)))
            return;
        int64_t avail = incl < (int64_t)o->total + 14 ? incl : (int64_t)o->total + 14;
        if (!parse(f + VXLAN_HEADERS, avail - VXLAN_HEADERS, in)
            || (in->proto == 6 && !t->tcp_fast)
            || (in->proto == 17 && (port_in(t->special, in->sport)
                                    || port_in(t->special, in->dport))))
            return;
        a->vx = 1;
    }
    a->common = 1;
    a->n = key_bytes(a->kb, o, t->l2, a->vx ? (int64_t)(be32(f + 46) >> 8) : -1, t->fold);
    a->key = xxh64(a->kb, a->n, 0);
}

/* run(i, due_ms, room, slot=-1, mode=0): the loaded block's records from the
 * i-th on, until one needs Python.  Returns (kind, next i, queue or None, ...):
 *   END; TICK, ms (the record at i is not processed); FLUSH; MORE;
 *   EXACT, index, frame, ts, orig, fast or None (fast: the decoded common case);
 *   EVENT, state, icmp type, ts, slot (ICMP echo; the next call gives the slot's
 *   mode: 1 requests, 2 replies or 0 no more events wanted).
 * Queue items, in file order before the result: (state, tcp flags, ab, ts, ttl)
 * a TCP event; (index, frame, ts, orig, view, keys, path) a common-case record of a
 * flow not in the table (at most `room` of them; `fast` of EXACT is (view, keys,
 * path) too); (index, frame, ts, orig) any record when the tracker is exact only. */
static PyObject *Tracker_run(Tracker *t, PyObject *args)
{
    Py_ssize_t pos, room;
    long long due;
    int eslot = -1, emode = 0;
    if (!PyArg_ParseTuple(args, "nLn|ii", &pos, &due, &room, &eslot, &emode))
        return NULL;
    if (!t->loaded) {
        PyErr_SetString(PyExc_ValueError, "run: no block loaded");
        return NULL;
    }
    if (eslot >= 0 && eslot < t->nslots && t->cold[eslot].state)
        set_icmp_mode(&t->hot[eslot], emode);
    const uint8_t *data = t->data.buf;
    const Py_ssize_t len = t->data.len;
    const int64_t *offsets = t->offs.buf;
    const Py_ssize_t count = t->offs.len / 8;
    const int little = t->little;
    const int64_t scale = t->nanosecond ? 1 : 1000;
    PyObject *queue = NULL, *out = NULL;
    Py_ssize_t queued = 0;
    uint8_t kb[128];
    Ahead ring[4];
    for (int i = 0; i < 4; i++)
        ring[i].pos = -1;
    if (pos < 0)
        pos = 0;
    while (1) {
        if (pos >= count) {
            out = Py_BuildValue("(inO)", R_END, count, queue ? queue : Py_None);
            break;
        }
        if (queued >= QUEUE_MAX) {
            out = Py_BuildValue("(inO)", R_MORE, pos, queue);
            break;
        }
        int64_t at = offsets[pos];
        if (at < 0 || at + 16 > len) {
            PyErr_Format(PyExc_ValueError, "run: record header at %lld outside the block",
                         (long long)at);
            break;
        }
        if (pos + 4 < count && offsets[pos + 4] >= 0 && offsets[pos + 4] < len) {
            __builtin_prefetch(data + offsets[pos + 4]);
            __builtin_prefetch(data + offsets[pos + 4] + 64);
        }
        const uint8_t *rec = data + at;
        uint32_t sec = little ? le32(rec) : be32(rec);
        uint32_t frac = little ? le32(rec + 4) : be32(rec + 4);
        int64_t incl = little ? le32(rec + 8) : be32(rec + 8);
        int64_t orig = little ? le32(rec + 12) : be32(rec + 12);
        if (at + 16 + incl > len) {
            PyErr_Format(PyExc_ValueError, "run: record at %lld ends outside the block",
                         (long long)at);
            break;
        }
        int64_t ts = (int64_t)sec * 1000000000 + (int64_t)frac * scale;
        int64_t ms = ts / 1000000;
        if (ms >= due) {
            out = Py_BuildValue("(inOL)", R_TICK, pos, queue ? queue : Py_None, (long long)ms);
            break;
        }
        const uint8_t *f = rec + 16;
        const int64_t index = t->index++;
        pos++;
        if (t->exact_only) {
            if (queue_add(&queue, Py_BuildValue("(Ly#LL)", (long long)index, (const char *)f,
                                                (Py_ssize_t)incl, (long long)ts,
                                                (long long)orig)) < 0)
                break;
            queued++;
            continue;
        }
        const Py_ssize_t cur = pos - 1; /* the record at hand */
        Ahead *a = &ring[cur & 3];
        if (a->pos != cur)
            classify(t, f, incl, a);
        a->pos = -1;
        /* the flows of the next records: their map bucket, then their slot */
        if (cur + 2 < count && t->map_cap) {
            Ahead *b = &ring[(cur + 2) & 3];
            int64_t bat = offsets[cur + 2];
            if (bat >= 0 && bat + 16 <= len) {
                int64_t bincl = little ? le32(data + bat + 8) : be32(data + bat + 8);
                if (bat + 16 + bincl <= len) {
                    classify(t, data + bat + 16, bincl, b);
                    b->pos = cur + 2;
                    if (b->common)
                        __builtin_prefetch(&t->map[b->key & (t->map_cap - 1)]);
                }
            }
        }
        if (cur + 1 < count && t->map_cap) {
            Ahead *b = &ring[(cur + 1) & 3];
            if (b->pos == cur + 1 && b->common) {
                int32_t i = t->map[b->key & (t->map_cap - 1)];
                if (i >= 0)
                    __builtin_prefetch(&t->hot[i]);
            }
        }
        const int common = a->common, vx = a->vx;
        const Hdr o = a->o, in = a->in;
        const size_t n0 = a->n;
        PyObject *fast = NULL;
        int32_t oslot = -1, slot = -1;
        if (common) {
            size_t n = n0;
            oslot = lookup(t, a->key, !vx && o.proto == 1);
            if (oslot == -2)
                break;
            if (oslot < 0 && !vx) {
                /* a flow to create: queued while the table has room */
                fast = new_flow_info(t, f, incl, &o, a->kb, n);
                if (!fast)
                    break;
                if (room > 0) {
                    PyObject *item = Py_BuildValue(
                        "(Ly#LLOOO)", (long long)index, (const char *)f, (Py_ssize_t)incl,
                        (long long)ts, (long long)orig, PyTuple_GET_ITEM(fast, 0),
                        PyTuple_GET_ITEM(fast, 1), PyTuple_GET_ITEM(fast, 2));
                    Py_DECREF(fast);
                    if (queue_add(&queue, item) < 0)
                        break;
                    room--;
                    queued++;
                    continue;
                }
            } else if (oslot >= 0 && vx) {
                n = key_bytes(kb, &in, t->l2, -1, t->fold);
                int ulen = slot_uuid(t, oslot, (char *)kb + n);
                if (ulen < 0)
                    break;
                if (ulen > 0) {
                    slot = lookup(t, xxh64(kb, n + (size_t)ulen, 0), in.proto == 1);
                    if (slot == -2)
                        break;
                }
            } else {
                slot = oslot;
            }
        }
        if (slot < 0) {
            out = Py_BuildValue("(inOLy#LLN)", R_EXACT, pos, queue ? queue : Py_None,
                                (long long)index, (const char *)f, (Py_ssize_t)incl,
                                (long long)ts, (long long)orig, fast ? fast : Py_NewRef(Py_None));
            break;
        }
        const Hdr *own = &o;
        if (vx) {
            if (add(t, oslot, t->l2 ? o.src_mac : o.src_ip, orig, 0, index, ms, 0) < 0)
                break;
            own = &in;
        }
        uint64_t src = t->l2 ? own->src_mac : own->src_ip;
        if (add(t, slot, src, vx ? orig - VXLAN_HEADERS : orig, own->flags, index, ms, vx) < 0)
            break;
        t->counted++;
        Hot *h = &t->hot[slot];
        if (own->proto == 6 && (own->flags & 0x07)) { /* FIN, SYN, RST */
            if (queue_add(&queue, Py_BuildValue("(OiOLi)", t->cold[slot].state, own->flags,
                                                src == h->a_num ? Py_True : Py_False,
                                                (long long)ts, (int)own->ttl)) < 0)
                break;
            queued++;
        } else if (own->proto == 1 && icmp_mode(h)) {
            uint8_t ty = own->itype;
            int wanted = icmp_mode(h) == 1 ? (ty == 8 || ty == 128) : (ty == 0 || ty == 129);
            if (wanted) {
                out = Py_BuildValue("(inOOiLi)", R_EVENT, pos, queue ? queue : Py_None,
                                    t->cold[slot].state, (int)ty, (long long)ts, (int)slot);
                break;
            }
        }
        if (t->need_flush) {
            t->need_flush = 0;
            out = Py_BuildValue("(inO)", R_FLUSH, pos, queue ? queue : Py_None);
            break;
        }
    }
    Py_XDECREF(queue);
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
        int32_t idx = t->dirty[i];
        Hot *h = &t->hot[idx];
        if (!(h->bits & B_DIRTY) || !t->cold[idx].state)
            continue;
        PyObject *item = Py_BuildValue("(OkLkLiiLiL)", t->cold[idx].state,
                                       (unsigned long)h->ab_pk, (long long)h->ab_by,
                                       (unsigned long)h->ba_pk, (long long)h->ba_by,
                                       (int)h->ab_fl, (int)h->ba_fl, (long long)h->last_idx,
                                       (int)(h->bits & B_DEPTH), (long long)h->last_ms);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
        h->ab_pk = h->ba_pk = 0;
        h->ab_by = h->ba_by = 0;
        h->ab_fl = h->ba_fl = 0;
        h->bits &= (uint8_t)~B_DIRTY;
    }
    t->ndirty = 0;
    t->need_flush = 0;
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
        if (!t->cold[i].state || (t->hot[i].bits & B_DIRTY))
            continue;
        PyObject *k = PyLong_FromUnsignedLongLong(t->hot[i].key);
        if (!k)
            return NULL;
        PyObject *state = PyObject_CallOneArg(t->get, k);
        Py_DECREF(k);
        if (!state)
            return NULL;
        if (state != t->cold[i].state)
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
        t->hot[idx].epoch = t->epoch - 1;
    Py_RETURN_NONE;
}

static PyObject *Tracker_reset(Tracker *t, PyObject *unused)
{
    clear_slots(t);
    t->counted = 0;
    Py_RETURN_NONE;
}

static PyObject *Tracker_cached(Tracker *t, void *closure) { return PyLong_FromSsize_t(t->used); }
static PyObject *Tracker_index(Tracker *t, void *closure) { return PyLong_FromLongLong(t->index); }

static PyMethodDef Tracker_methods[] = {
    {"load", (PyCFunction)Tracker_load, METH_VARARGS,
     "load(data, offsets, little, nanosecond): the block run() walks"},
    {"release", (PyCFunction)Tracker_release, METH_NOARGS, "let go of the loaded block"},
    {"run", (PyCFunction)Tracker_run, METH_VARARGS,
     "run(i, due_ms, room, slot=-1, mode=0) -> (kind, next i, queue, ...)"},
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
    {"cached", (getter)Tracker_cached, NULL, "flows cached in slots", NULL},
    {"index", (getter)Tracker_index, NULL, "records seen", NULL},
    {NULL}
};

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "skygraph.capture._fastflow.Tracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Tracker(get, l2, tcp_fast, exact_only, mpls_port, special, fold, types, strings)",
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
        __builtin_prefetch(d + off + 1024); /* records are read in sequence */
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
        || PyModule_AddIntConstant(m, "EVENT", R_EVENT) < 0
        || PyModule_AddIntConstant(m, "FLUSH", R_FLUSH) < 0
        || PyModule_AddIntConstant(m, "MORE", R_MORE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
