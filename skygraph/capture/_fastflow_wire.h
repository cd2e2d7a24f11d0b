/* _fastflow_wire.h: the wire side of _fastflow.c -- XXH64, the common-case
 * headers (Ethernet/IPv4/{TCP,UDP,ICMPv4}, no options, not a fragment) and the
 * bytes of a Skydive flow key (flowkey.keys, byte-exact).  Pure: no Python
 * object is touched here, so all of it runs without the GIL.
 */
#ifndef SKYGRAPH_FASTFLOW_WIRE_H
#define SKYGRAPH_FASTFLOW_WIRE_H
#include <stddef.h>
#include <stdint.h>

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


#endif
