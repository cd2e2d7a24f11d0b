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
 *
 * A tracker can be one of `shares` readers of a file (`share`): it then skips the
 * records of the other shares (`share_of`, fanout.py's hash), ticking on their
 * time all the same, so that its flows are those of a single reader.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FASTFLOW_VERSION 7

/* results of run(): block done, tick due, record for the exact path, ICMP echo
 * event, sums to apply (a packet counter is near its limit), queue full */
enum { R_END = 0, R_TICK = 1, R_EXACT = 2, R_EVENT = 3, R_FLUSH = 4, R_MORE = 5 };
#define QUEUE_MAX 4096
#define MAX_SHARES 64 /* readers of one file (fanout.py's MAX_READERS) */

#include "_fastflow_wire.h"
#include "_fastflow_ring.h"

/* ---- slots and the key -> slot map ----------------------------------------- */
#define B_DEPTH 1  /* the last packet summed was the inner flow of a VXLAN packet */
#define B_DIRTY 2  /* sums not handed over yet */
#define B_ICMP_SHIFT 2 /* ICMP echo events wanted: 0 none, 1 requests, 2 replies */
#define B_RAW 16   /* raw packets still kept (Cold.raw_left > 0): read by every packet */
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
    int32_t raw_left; /* raw packets the flow still keeps (RawPacketLimit) */
    PyObject *flow;   /* state.flow (strong reference) once a raw packet is kept; NULL */
} Cold;

_Static_assert(sizeof(Hot) == 64, "a slot's hot part is one cache line");

/* NamedTuple classes (Tracker's `types`) and strings (`strings`) */
enum { T_ETH, T_IPV4, T_TCP, T_PORTS, T_ICMP, T_VIEW, T_KEYS, T_COUNT };
enum { S_PATH_TCP, S_PATH_UDP, S_PATH_ICMP, S_TCP, S_UDP, S_ICMP, S_EMPTY, S_COUNT };

typedef struct {
    PyObject_HEAD
    PyObject *get;             /* FlowTable.get */
    int l2, tcp_fast, exact_only;
    int raw_limit;             /* RawPacketLimit: each flow's first packets kept */
    PyObject *raw_packet;      /* the RawPacket class they are kept as */
    uint16_t mpls_port;
    uint32_t share, shares;    /* the records this tracker reads: share_of() == share */
    uint64_t special[1024];    /* UDP ports whose payload the decoder decodes (bitmap) */
    uint64_t vx_special[1024]; /* the same without the VXLAN ports */
    uint8_t fold[256];         /* ICMPv4 type -> folded ICMPType */
    uint32_t epoch;
    int64_t index;             /* records seen (touch order) */
    int64_t counted;           /* records summed since the last flush */
    int need_flush;
    int dirty_failed;          /* `dirty` could not grow (no memory): raised with the GIL */
    Hot *hot;                  /* 64-byte aligned */
    Cold *cold;
    Py_ssize_t nslots, cap, used;
    int32_t free_head;
    int32_t *map;              /* open addressing on slot keys; -1 empty */
    size_t map_cap, map_count;
    int32_t *dirty;
    Py_ssize_t ndirty, dirty_cap;
    struct PendingEventS *events; /* TCP events met without the GIL (run) */
    Py_ssize_t nevents, events_cap;
    Py_buffer data, offs;      /* the loaded block */
    int loaded, little, nanosecond;
    PyObject *types[T_COUNT];  /* decoder/flowkey NamedTuples built for new flows */
    PyObject *strings[S_COUNT];
} Tracker;

static PyObject *s_a_num, *s_rtt_start, *s_flow, *s_metric, *s_rtt, *s_uuid, *s_raw_captured,
    *s_last_raw;

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
    Py_CLEAR(t->cold[idx].flow);
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

/* state.flow.<name> (a new reference), NULL on error. */
static PyObject *flow_attr(PyObject *state, PyObject *name)
{
    PyObject *flow = PyObject_GetAttr(state, s_flow);
    if (!flow)
        return NULL;
    PyObject *value = PyObject_GetAttr(flow, name);
    Py_DECREF(flow);
    return value;
}

/* ICMP echo events still wanted by a flow: 1 requests (no request seen),
 * 2 replies (request seen, RTT unknown), 0 none (RTT known). */
static int icmp_mode_of(PyObject *state)
{
    PyObject *metric = flow_attr(state, s_metric);
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

static inline void set_raw_left(Tracker *t, int32_t idx, int raw)
{
    t->cold[idx].raw_left = raw;
    t->hot[idx].bits = (uint8_t)((t->hot[idx].bits & ~B_RAW) | (raw > 0 ? B_RAW : 0));
}

static inline int icmp_mode(const Hot *h) { return h->bits >> B_ICMP_SHIFT & 3; }

static inline void set_icmp_mode(Hot *h, int mode)
{
    h->bits = (uint8_t)((h->bits & ~(3 << B_ICMP_SHIFT)) | (mode & 3) << B_ICMP_SHIFT);
}

/* The raw packets a flow still keeps: RawPacketLimit - its RawPacketsCaptured
 * (0 without a limit), -1 on error. */
static int raw_left_of(const Tracker *t, PyObject *state)
{
    if (t->raw_limit <= 0)
        return 0;
    PyObject *n = flow_attr(state, s_raw_captured);
    if (!n)
        return -1;
    long captured = PyLong_AsLong(n);
    Py_DECREF(n);
    if (captured == -1 && PyErr_Occurred())
        return -1;
    return captured < t->raw_limit ? t->raw_limit - (int)(captured > 0 ? captured : 0) : 0;
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
    int raw = raw_left_of(t, state);
    if (raw < 0)
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
    t->cold[idx].flow = NULL;
    t->cold[idx].next_free = -1;
    if (map_put(t, idx) < 0) {
        t->cold[idx].next_free = t->free_head;
        t->free_head = idx;
        return -2;
    }
    Py_INCREF(state);
    t->cold[idx].state = state;
    set_raw_left(t, idx, raw);
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
            /* the exact path may have moved the echo state on, or kept raw packets */
            int mode = icmp ? icmp_mode_of(state) : 0;
            int raw = mode < 0 ? -1 : raw_left_of(t, state);
            Py_DECREF(state);
            if (mode < 0 || raw < 0)
                return -2;
            set_raw_left(t, idx, raw);
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

/* Needs no GIL: `dirty` is plain C memory; on failure `dirty_failed` is set. */
static void mark(Tracker *t, int32_t idx)
{
    if (t->ndirty == t->dirty_cap) {
        Py_ssize_t cap = t->dirty_cap ? t->dirty_cap * 2 : 1024;
        int32_t *d = realloc(t->dirty, (size_t)cap * sizeof(int32_t));
        if (!d) {
            t->dirty_failed = 1;
            return;
        }
        t->dirty = d;
        t->dirty_cap = cap;
    }
    t->dirty[t->ndirty++] = idx;
    t->hot[idx].bits |= B_DIRTY;
}

static inline void add(Tracker *t, int32_t idx, uint64_t src, int64_t size, uint8_t flags,
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
        mark(t, idx);
}

/* ---- Tracker --------------------------------------------------------------- */
/* Which of `shares` readers reads an Ethernet frame: fanout.py's hash (the sum of
 * the IP address words, times Knuth's constant, high half; symmetric, and a tunnel's
 * packets go with their outer addresses), after up to two VLAN tags.  Anything but
 * IPv4/IPv6, or a frame too short for its addresses, is reader 0's. */
static uint32_t share_of(const uint8_t *f, int64_t incl, uint32_t shares)
{
    int64_t at = 12; /* the EtherType */
    uint16_t type = incl >= 14 ? be16(f + 12) : 0;
    for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88A8) && incl >= at + 6; tags++) {
        at += 4;
        type = be16(f + at);
    }
    at += 2; /* the network header */
    int64_t first, words;
    if (type == 0x0800) {
        first = 12, words = 2; /* saddr, daddr */
    } else if (type == 0x86DD) {
        first = 8, words = 8; /* saddr[4], daddr[4] */
    } else {
        return 0;
    }
    if (incl < at + first + 4 * words)
        return 0;
    uint32_t sum = 0;
    for (int64_t i = 0; i < words; i++)
        sum += be32(f + at + first + 4 * i);
    return ((sum * 2654435761u) >> 16) % shares;
}

static int Tracker_init(Tracker *t, PyObject *args, PyObject *kw)
{
    static char *names[] = {"get", "l2", "tcp_fast", "exact_only", "mpls_port", "special",
                            "fold", "types", "strings", "raw_limit", "raw_packet", "share",
                            "shares", NULL};
    PyObject *get, *special, *types, *strings, *raw_packet = Py_None;
    int l2, tcp_fast, exact_only, mpls_port, raw_limit = 0, share = 0, shares = 1;
    Py_buffer fold;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OpppiOy*O!O!|iOii", names, &get, &l2, &tcp_fast,
                                     &exact_only, &mpls_port, &special, &fold, &PyTuple_Type,
                                     &types, &PyTuple_Type, &strings, &raw_limit, &raw_packet,
                                     &share, &shares))
        return -1;
    if (shares < 1 || shares > MAX_SHARES || share < 0 || share >= shares) {
        PyBuffer_Release(&fold);
        PyErr_Format(PyExc_ValueError, "Tracker: share %d of %d: need 0 <= share < shares <= %d",
                     share, shares, MAX_SHARES);
        return -1;
    }
    t->share = (uint32_t)share;
    t->shares = (uint32_t)shares;
    if (raw_limit < 0 || (raw_limit > 0 && !(PyType_Check(raw_packet) && PyType_IsSubtype(
                              (PyTypeObject *)raw_packet, &PyTuple_Type)))) {
        PyBuffer_Release(&fold);
        PyErr_SetString(PyExc_ValueError, "Tracker: raw_limit must be >= 0, with raw_packet "
                                          "the RawPacket class (a tuple subclass)");
        return -1;
    }
    Py_INCREF(raw_packet);
    Py_XSETREF(t->raw_packet, raw_packet);
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
    t->raw_limit = raw_limit;
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
    for (Py_ssize_t i = 0; i < t->nslots; i++) {
        Py_CLEAR(t->cold[i].state);
        Py_CLEAR(t->cold[i].flow);
    }
    free(t->hot);
    PyMem_Free(t->cold);
    PyMem_Free(t->map);
    free(t->dirty);
    free(t->events);
    t->hot = NULL;
    t->cold = NULL;
    t->map = NULL;
    t->dirty = NULL;
    t->events = NULL;
    t->nevents = t->events_cap = 0;
    t->nslots = t->cap = t->ndirty = t->dirty_cap = t->used = 0;
    t->map_cap = t->map_count = 0;
    t->free_head = -1;
}

static int Tracker_traverse(Tracker *t, visitproc visit, void *arg)
{
    Py_VISIT(t->get);
    Py_VISIT(t->raw_packet);
    for (int i = 0; i < T_COUNT; i++)
        Py_VISIT(t->types[i]);
    for (int i = 0; i < S_COUNT; i++)
        Py_VISIT(t->strings[i]);
    for (Py_ssize_t i = 0; i < t->nslots; i++) {
        Py_VISIT(t->cold[i].state);
        Py_VISIT(t->cold[i].flow);
    }
    return 0;
}

static int Tracker_clear(Tracker *t)
{
    release(t);
    Py_CLEAR(t->get);
    Py_CLEAR(t->raw_packet);
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

/* ---- run(): the loaded block, with the GIL released while no Python is needed ----
 *
 * run(i, due_ms, room, slot=-1, mode=0) walks the loaded block's records from the
 * i-th on until one needs Python and returns a `Step`:
 *   kind END (block done), TICK (`tick_ms`; the record at `pos` is not processed),
 *   FLUSH (a packet counter is near its limit), MORE (queue full),
 *   EXACT (`record`: a `Record` for the exact path; its `fast` is the decoded common
 *   case or None), EVENT (`event`: an `EchoEvent`, ICMP echo while the RTT is
 *   unknown; the next call gives the slot's mode: 1 requests, 2 replies, 0 none);
 *   `pos`: the next record; `queue`: None or, in file order before the result,
 *   `TcpEvent`s (SYN/FIN/RST of a flow in the table, after the record is summed),
 *   `NewFlow`s (a common-case record creating its flow; at most `room` of them) and,
 *   when the tracker is exact only, `Record`s.
 *
 * The walk runs without the GIL once it has summed a few records in a row; it
 * takes the GIL back for whatever touches Python (a flow looked up in the table,
 * a record or event handed over, an error).  TCP events met without the GIL wait
 * in `Tracker.events` (slot numbers: a slot is only unbound with the GIL held, and
 * the waiting events become queue items first). */
#define NOGIL_AFTER 32 /* records summed in a row before the GIL is let go */

typedef struct PendingEventS {  /* a TCP event met without the GIL */
    int64_t ts;
    int32_t slot;
    uint8_t flags, ab, ttl;
} PendingEvent;

typedef struct {  /* one call of run() */
    Tracker *t;
    PyThreadState *save; /* non-NULL: the GIL is released */
    PyObject *queue;
    Py_ssize_t queued, room;
    int streak;
} Run;

static PyTypeObject StepType, RecordType, NewFlowType, TcpEventType, EchoEventType, SumsType;

static PyObject *record_of(PyTypeObject *type, Py_ssize_t n, ...)
{
    PyObject *out = PyStructSequence_New(type);
    va_list ap;
    va_start(ap, n);
    int failed = out == NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = va_arg(ap, PyObject *);
        if (!item)
            failed = 1;
        if (out && item)
            PyStructSequence_SET_ITEM(out, i, item);
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

static inline void run_gil(Run *r)
{
    if (r->save) {
        PyEval_RestoreThread(r->save);
        r->save = NULL;
    }
    r->streak = 0;
}

static inline void run_nogil(Run *r)
{
    if (!r->save && ++r->streak >= NOGIL_AFTER)
        r->save = PyEval_SaveThread();
}

static int run_queue(Run *r, PyObject *item)
{
    if (queue_add(&r->queue, item) < 0)
        return -1;
    r->queued++;
    return 0;
}

static PyObject *tcp_event(Tracker *t, int32_t slot, int flags, int ab, int64_t ts, int ttl)
{
    return record_of(&TcpEventType, 5, Py_NewRef(t->cold[slot].state), PyLong_FromLong(flags),
                     PyBool_FromLong(ab), PyLong_FromLongLong(ts), PyLong_FromLong(ttl));
}

/* The GIL back, and the TCP events met without it into the queue (file order). */
static int run_python(Run *r)
{
    run_gil(r);
    Tracker *t = r->t;
    for (Py_ssize_t i = 0; i < t->nevents; i++) {
        const PendingEvent *e = &t->events[i];
        if (run_queue(r, tcp_event(t, e->slot, e->flags, e->ab, e->ts, e->ttl)) < 0) {
            t->nevents = 0;
            return -1;
        }
    }
    t->nevents = 0;
    return 0;
}

static int run_event(Run *r, int32_t slot, uint8_t flags, int ab, int64_t ts, uint8_t ttl)
{
    Tracker *t = r->t;
    if (!r->save)
        return run_queue(r, tcp_event(t, slot, flags, ab, ts, ttl));
    if (t->nevents == t->events_cap) {
        Py_ssize_t cap = t->events_cap ? t->events_cap * 2 : 256;
        PendingEvent *e = realloc(t->events, (size_t)cap * sizeof(PendingEvent));
        if (!e) {
            if (run_python(r) == 0)
                PyErr_NoMemory();
            return -1;
        }
        t->events = e;
        t->events_cap = cap;
    }
    t->events[t->nevents++] = (PendingEvent){ts, slot, flags, (uint8_t)ab, ttl};
    r->queued++;
    return 0;
}

static PyObject *run_step(Run *r, int kind, Py_ssize_t pos, PyObject *record, PyObject *event,
                          int64_t tick_ms)
{
    return record_of(&StepType, 6, PyLong_FromLong(kind), PyLong_FromSsize_t(pos),
                     Py_NewRef(r->queue ? r->queue : Py_None),
                     record ? record : Py_NewRef(Py_None), event ? event : Py_NewRef(Py_None),
                     PyLong_FromLongLong(tick_ms));
}

static PyObject *exact_record(int64_t index, const uint8_t *f, int64_t incl, int64_t ts,
                              int64_t orig, PyObject *fast)
{
    return record_of(&RecordType, 5, PyLong_FromLongLong(index),
                     PyBytes_FromStringAndSize((const char *)f, incl), PyLong_FromLongLong(ts),
                     PyLong_FromLongLong(orig), fast ? fast : Py_NewRef(Py_None));
}

/* One more raw packet of a flow (RawPacketLimit), as flowstate.keep_raw keeps it:
 * RawPacketsCaptured becomes `number` and a RawPacket(ms, number, data, Ethernet)
 * goes at the end of LastRawPackets.  Kept at once (not queued): a flow the
 * extension sums is in the table, and its packets the exact path takes come back
 * as steps, in file order.  The slot holds the Flow while it keeps packets (a
 * FlowState's flow is never replaced). */
static int keep_raw(Tracker *t, int32_t idx, long k, int64_t ts, const uint8_t *data,
                    Py_ssize_t n)
{
    Cold *c = &t->cold[idx];
    if (!c->flow && !(c->flow = PyObject_GetAttr(c->state, s_flow)))
        return -1;
    PyObject *flow = Py_NewRef(c->flow);
    PyObject *raw = NULL, *kept = NULL, *grown = NULL, *number = NULL;
    if (!(number = PyLong_FromLong(k)))
        goto done;
    raw = named(t->raw_packet, 4, PyLong_FromLongLong(ts / 1000000), Py_NewRef(number),
                PyBytes_FromStringAndSize((const char *)data, n), PyLong_FromLong(1));
    if (!raw || !(kept = PyObject_GetAttr(flow, s_last_raw)))
        goto done;
    if (!PyTuple_Check(kept)) {
        PyErr_SetString(PyExc_TypeError, "keep_raw: Flow.last_raw_packets is not a tuple");
        goto done;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(kept);
    if (!(grown = PyTuple_New(size + 1)))
        goto done;
    for (Py_ssize_t i = 0; i < size; i++)
        PyTuple_SET_ITEM(grown, i, Py_NewRef(PyTuple_GET_ITEM(kept, i)));
    PyTuple_SET_ITEM(grown, size, raw);
    raw = NULL;
    if (PyObject_SetAttr(flow, s_last_raw, grown) == 0
        && PyObject_SetAttr(flow, s_raw_captured, number) == 0) {
        Py_DECREF(grown);
        Py_DECREF(kept);
        Py_DECREF(number);
        Py_DECREF(flow);
        return 0;
    }
done:
    Py_XDECREF(grown);
    Py_XDECREF(kept);
    Py_XDECREF(raw);
    Py_XDECREF(number);
    Py_DECREF(flow);
    return -1;
}

/* A summed packet the flows of `outer` (-1: none) and `slot` keep, the outer flow's
 * first (as the per-packet path keeps them); a VXLAN inner flow's starts at its
 * Ethernet header. */
static int run_raw(Run *r, int32_t outer, int32_t slot, const uint8_t *f, int64_t incl,
                   int64_t ts)
{
    Tracker *t = r->t;
    if (run_python(r) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int32_t idx = i ? slot : outer;
        int64_t at = i && outer >= 0 ? VXLAN_HEADERS : 0;
        if (idx < 0 || t->cold[idx].raw_left <= 0 || at > incl)
            continue;
        /* raw_left = RawPacketLimit - RawPacketsCaptured since the slot was checked */
        long number = t->raw_limit - t->cold[idx].raw_left + 1;
        set_raw_left(t, idx, t->cold[idx].raw_left - 1);
        if (keep_raw(t, idx, number, ts, f + at, incl - at) < 0)
            return -1;
        if (t->cold[idx].raw_left == 0)
            Py_CLEAR(t->cold[idx].flow);
    }
    return 0;
}

/* The slot of a common-case flow: >= 0, -1 not in the table, -2 error.  A slot
 * checked in this epoch needs no Python. */
static int32_t run_lookup(Run *r, uint64_t key, int icmp)
{
    Tracker *t = r->t;
    int32_t idx = map_find(t, key);
    if (idx >= 0 && t->hot[idx].epoch == t->epoch)
        return idx;
    if (run_python(r) < 0)
        return -2;
    return lookup(t, key, icmp);
}

/* The record at `cur` (its header read): summed (0), or a step to return (1,
 * `*out`; NULL on error). */
static int run_record(Run *r, Ahead *ring, const uint8_t *data, Py_ssize_t len,
                      const int64_t *offsets, Py_ssize_t count, Py_ssize_t cur,
                      const uint8_t *f, int64_t incl, int64_t ts, int64_t orig,
                      PyObject **out)
{
    Tracker *t = r->t;
    const int little = t->little;
    const int64_t ms = ts / 1000000, index = t->index++;
    const Py_ssize_t pos = cur + 1;
    *out = NULL;
    if (t->exact_only) {
        if (run_python(r) < 0 || run_queue(r, exact_record(index, f, incl, ts, orig, NULL)) < 0)
            return 1;
        return 0;
    }
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
            if (bat + 16 + bincl <= len
                && (t->shares == 1 || share_of(data + bat + 16, bincl, t->shares) == t->share)) {
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
    const int vx = a->vx;
    const Hdr *o = &a->o, *in = &a->in;
    PyObject *fast = NULL;
    int32_t oslot = -1, slot = -1;
    if (a->common) {
        oslot = run_lookup(r, a->key, !vx && o->proto == 1);
        if (oslot == -2)
            return 1;
        if (oslot < 0 && !vx) {
            /* a flow to create: queued while the table has room */
            if (run_python(r) < 0)
                return 1;
            fast = new_flow_info(t, f, incl, o, a->kb, a->n);
            if (!fast)
                return 1;
            if (r->room > 0) {
                PyObject *item = record_of(
                    &NewFlowType, 7, PyLong_FromLongLong(index),
                    PyBytes_FromStringAndSize((const char *)f, incl), PyLong_FromLongLong(ts),
                    PyLong_FromLongLong(orig), Py_NewRef(PyTuple_GET_ITEM(fast, 0)),
                    Py_NewRef(PyTuple_GET_ITEM(fast, 1)), Py_NewRef(PyTuple_GET_ITEM(fast, 2)));
                Py_DECREF(fast);
                if (run_queue(r, item) < 0)
                    return 1;
                r->room--;
                return 0;
            }
        } else if (oslot >= 0 && vx) {
            uint8_t kb[128];
            size_t n = key_bytes(kb, in, t->l2, -1, t->fold);
            if (!t->hot[oslot].uuid_state && run_python(r) < 0)
                return 1;
            int ulen = slot_uuid(t, oslot, (char *)kb + n);
            if (ulen < 0)
                return 1;
            if (ulen > 0) {
                slot = run_lookup(r, xxh64(kb, n + (size_t)ulen, 0), in->proto == 1);
                if (slot == -2)
                    return 1;
            }
        } else {
            slot = oslot;
        }
    }
    if (slot < 0) {
        if (run_python(r) < 0) {
            Py_XDECREF(fast);
            return 1;
        }
        *out = run_step(r, R_EXACT, pos, exact_record(index, f, incl, ts, orig, fast), NULL, 0);
        return 1;
    }
    const Hdr *own = o;
    if (vx) {
        add(t, oslot, t->l2 ? o->src_mac : o->src_ip, orig, 0, index, ms, 0);
        own = in;
    }
    uint64_t src = t->l2 ? own->src_mac : own->src_ip;
    add(t, slot, src, vx ? orig - VXLAN_HEADERS : orig, own->flags, index, ms, vx);
    if (t->dirty_failed) {
        t->dirty_failed = 0;
        if (run_python(r) == 0)
            PyErr_NoMemory();
        return 1;
    }
    t->counted++;
    if (((vx && t->hot[oslot].bits & B_RAW) || t->hot[slot].bits & B_RAW)
        && run_raw(r, vx ? oslot : -1, slot, f, incl, ts) < 0)
        return 1;
    Hot *h = &t->hot[slot];
    if (own->proto == 6 && (own->flags & 0x07)) { /* FIN, SYN, RST */
        if (run_event(r, slot, own->flags, src == h->a_num, ts, own->ttl) < 0)
            return 1;
    } else if (own->proto == 1 && icmp_mode(h)) {
        uint8_t ty = own->itype;
        int wanted = icmp_mode(h) == 1 ? (ty == 8 || ty == 128) : (ty == 0 || ty == 129);
        if (wanted) {
            if (run_python(r) < 0)
                return 1;
            PyObject *ev = record_of(&EchoEventType, 4, Py_NewRef(t->cold[slot].state),
                                     PyLong_FromLong(ty), PyLong_FromLongLong(ts),
                                     PyLong_FromLong(slot));
            *out = ev ? run_step(r, R_EVENT, pos, NULL, ev, 0) : NULL;
            return 1;
        }
    }
    if (t->need_flush) {
        t->need_flush = 0;
        if (run_python(r) == 0)
            *out = run_step(r, R_FLUSH, pos, NULL, NULL, 0);
        return 1;
    }
    run_nogil(r);
    return 0;
}

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
    Run r = {t, NULL, NULL, 0, room, 0};
    PyObject *out = NULL;
    Ahead ring[4];
    for (int i = 0; i < 4; i++)
        ring[i].pos = -1;
    if (pos < 0)
        pos = 0;
    for (;;) {
        if (pos >= count || r.queued >= QUEUE_MAX) {
            if (run_python(&r) == 0)
                out = run_step(&r, pos >= count ? R_END : R_MORE, pos < count ? pos : count,
                               NULL, NULL, 0);
            break;
        }
        int64_t at = offsets[pos];
        const uint8_t *rec = data + at;
        int64_t incl = at >= 0 && at + 16 <= len
                       ? (int64_t)(little ? le32(rec + 8) : be32(rec + 8)) : -1;
        if (incl < 0 || at + 16 + incl > len) {
            if (run_python(&r) == 0)
                PyErr_Format(PyExc_ValueError, "run: record at %lld ends outside the block",
                             (long long)at);
            break;
        }
        if (pos + 4 < count && offsets[pos + 4] >= 0 && offsets[pos + 4] < len) {
            __builtin_prefetch(data + offsets[pos + 4]);
            __builtin_prefetch(data + offsets[pos + 4] + 64);
        }
        uint32_t sec = little ? le32(rec) : be32(rec);
        uint32_t frac = little ? le32(rec + 4) : be32(rec + 4);
        int64_t orig = little ? le32(rec + 12) : be32(rec + 12);
        int64_t ts = (int64_t)sec * 1000000000 + (int64_t)frac * scale;
        if (ts / 1000000 >= due) {
            if (run_python(&r) == 0)
                out = run_step(&r, R_TICK, pos, NULL, NULL, ts / 1000000);
            break;
        }
        if (t->shares > 1 && share_of(rec + 16, incl, t->shares) != t->share) {
            t->index++; /* another reader's record, numbered all the same */
            pos++;
            continue;
        }
        if (run_record(&r, ring, data, len, offsets, count, pos, rec + 16, incl, ts, orig, &out))
            break;
        pos++;
    }
    run_gil(&r);
    Py_XDECREF(r.queue);
    return out;
}

/* flush() -> (list of `Sums`, records summed) since the last flush. */
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
        PyObject *item = record_of(
            &SumsType, 10, Py_NewRef(t->cold[idx].state), PyLong_FromUnsignedLong(h->ab_pk),
            PyLong_FromLongLong(h->ab_by), PyLong_FromUnsignedLong(h->ba_pk),
            PyLong_FromLongLong(h->ba_by), PyLong_FromLong(h->ab_fl), PyLong_FromLong(h->ba_fl),
            PyLong_FromLongLong(h->last_idx), PyLong_FromLong(h->bits & B_DEPTH),
            PyLong_FromLongLong(h->last_ms));
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

/* share(frame, shares) -> the reader of an Ethernet frame (Tracker's `share`). */
static PyObject *ff_share(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int shares;
    if (!PyArg_ParseTuple(args, "y*i", &b, &shares))
        return NULL;
    if (shares < 1 || shares > MAX_SHARES) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "share: shares must be 1 to %d", MAX_SHARES);
        return NULL;
    }
    uint32_t out = share_of(b.buf, (int64_t)b.len, (uint32_t)shares);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(out);
}

static PyMethodDef module_methods[] = {
    {"share", ff_share, METH_VARARGS, "share(frame, shares) -> the reader of an Ethernet frame"},
    {"xxh64", ff_xxh64, METH_VARARGS, "xxh64(data, seed=0) -> int (XXH64)"},
    {"index", ff_index, METH_VARARGS, "index(data, little) -> (int64 offsets bytes, end)"},
    {"ring_records", ff_ring_records, METH_VARARGS,
     "ring_records(ring, bases, block_size, link_header) -> int64 offsets bytes or None:\n"
     "the packets of the TPACKET_V3 blocks at `bases` rewritten in place as pcap records"},
    {NULL}
};

/* ---- the records that cross into Python ---------------------------------------- */
static PyStructSequence_Field step_fields[] = {
    {"kind", "END, TICK, EXACT, EVENT, FLUSH or MORE"},
    {"pos", "the next record of the block"},
    {"queue", "None or the queued TcpEvent, NewFlow and Record items, in file order"},
    {"record", "EXACT: the Record for the exact path"},
    {"event", "EVENT: the EchoEvent"},
    {"tick_ms", "TICK: the packet time (ms) the tick is due at"},
    {NULL}};
static PyStructSequence_Field record_fields[] = {
    {"number", "record number (touch order)"}, {"frame", "captured bytes"},
    {"ts", "timestamp (ns)"}, {"orig", "wire length"},
    {"fast", "None or (View, Keys, LayersPath) of a common-case frame"}, {NULL}};
static PyStructSequence_Field new_flow_fields[] = {
    {"number", "record number (touch order)"}, {"frame", "captured bytes"},
    {"ts", "timestamp (ns)"}, {"orig", "wire length"}, {"view", "decoder View"},
    {"keys", "flowkey Keys"}, {"path", "LayersPath"}, {NULL}};
static PyStructSequence_Field tcp_event_fields[] = {
    {"state", "FlowState"}, {"flags", "TCP flags"}, {"ab", "A to B"},
    {"ts", "timestamp (ns)"}, {"ttl", "IP TTL"}, {NULL}};
static PyStructSequence_Field echo_event_fields[] = {
    {"state", "FlowState"}, {"icmp_type", "ICMP type"}, {"ts", "timestamp (ns)"},
    {"slot", "the flow's slot (give its mode to the next run)"}, {NULL}};
static PyStructSequence_Field sums_fields[] = {
    {"state", "FlowState"}, {"ab_packets", ""}, {"ab_bytes", ""}, {"ba_packets", ""},
    {"ba_bytes", ""}, {"ab_flags", "TCP flags ORed"}, {"ba_flags", "TCP flags ORed"},
    {"last_index", "record number of the flow's last packet"},
    {"depth", "1: that packet's inner flow (VXLAN)"}, {"last_ms", "its time (ms)"}, {NULL}};

static PyStructSequence_Desc record_descs[] = {
    {"skygraph.capture._fastflow.Step", "what run() stopped at", step_fields, 6},
    {"skygraph.capture._fastflow.Record", "a record for the exact path", record_fields, 5},
    {"skygraph.capture._fastflow.NewFlow", "a common-case record creating its flow",
     new_flow_fields, 7},
    {"skygraph.capture._fastflow.TcpEvent", "SYN/FIN/RST of a flow in the table",
     tcp_event_fields, 5},
    {"skygraph.capture._fastflow.EchoEvent", "ICMP echo while the RTT is unknown",
     echo_event_fields, 4},
    {"skygraph.capture._fastflow.Sums", "a flow's sums since the last flush", sums_fields, 10},
};
static PyTypeObject *record_types[] = {&StepType, &RecordType, &NewFlowType, &TcpEventType,
                                       &EchoEventType, &SumsType};
static const char *record_names[] = {"Step", "Record", "NewFlow", "TcpEvent", "EchoEvent",
                                     "Sums"};
#define RECORD_TYPES ((int)(sizeof record_types / sizeof record_types[0]))

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
    s_raw_captured = PyUnicode_InternFromString("raw_packets_captured");
    s_last_raw = PyUnicode_InternFromString("last_raw_packets");
    if (!s_a_num || !s_rtt_start || !s_flow || !s_metric || !s_rtt || !s_uuid || !s_raw_captured
        || !s_last_raw)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    for (int i = 0; i < RECORD_TYPES; i++) {
        if (!record_types[i]->tp_name
            && PyStructSequence_InitType2(record_types[i], &record_descs[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
        Py_INCREF(record_types[i]);
        if (PyModule_AddObject(m, record_names[i], (PyObject *)record_types[i]) < 0) {
            Py_DECREF(record_types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
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
