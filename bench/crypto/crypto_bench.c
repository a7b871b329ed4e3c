/* llmux-crypto-bench: the CPU cost, with the mbedTLS llmux links, of what a TLS 1.2 connection
 * spends on crypto: sealing a record with each AEAD llmux may negotiate (the cipher suite order
 * in src/conn.c follows these numbers), an ECDHE key exchange on each offered group, and one
 * ECDSA P-256 signature check (a full handshake verifies two: the certificate's and the key
 * exchange's). CPU time of this process, so other work on the machine only adds cache noise.
 * Prints one JSON object (bench/tls.mjs reads it). */
#include <mbedtls/chachapoly.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/gcm.h>
#include <stdio.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned char in[16384], out[16384], tag[16];
static const unsigned char key[32] = {1}, iv[12] = {2}, aad[13] = {3};

/* ns per byte sealing records of n bytes, the best of 3 runs */
static double seal(int which, size_t n)
{
    mbedtls_gcm_context g;
    mbedtls_chachapoly_context c;
    mbedtls_gcm_init(&g);
    mbedtls_chachapoly_init(&c);
    if (which < 2)
        mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, which == 0 ? 128 : 256);
    else
        mbedtls_chachapoly_setkey(&c, key);
    int iters = (int)(20000000 / n);
    double best = 1e9;
    for (int run = 0; run < 3; run++) {
        double t = cpu_now();
        for (int i = 0; i < iters; i++) {
            if (which < 2)
                mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, n, iv, sizeof(iv), aad,
                                          sizeof(aad), in, out, sizeof(tag), tag);
            else
                mbedtls_chachapoly_encrypt_and_tag(&c, n, iv, aad, sizeof(aad), in, out, tag);
        }
        double ns = (cpu_now() - t) / iters / (double)n * 1e9;
        best = ns < best ? ns : best;
    }
    mbedtls_gcm_free(&g);
    mbedtls_chachapoly_free(&c);
    return best;
}

int main(void)
{
    mbedtls_entropy_context e;
    mbedtls_ctr_drbg_context d;
    mbedtls_entropy_init(&e);
    mbedtls_ctr_drbg_init(&d);
    if (mbedtls_ctr_drbg_seed(&d, mbedtls_entropy_func, &e, NULL, 0) != 0)
        return 1;
    static const char *const aeads[] = {"AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"};
    printf("{\"seal_ns_per_byte\":{");
    for (int a = 0; a < 3; a++)
        printf("%s\"%s\":{\"1400\":%.2f,\"16384\":%.2f}", a ? "," : "", aeads[a], seal(a, 1400),
               seal(a, 16384));
    printf("},\"ecdhe_ms\":{");
    static const mbedtls_ecp_group_id groups[] = {MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_CURVE25519,
                                                  MBEDTLS_ECP_DP_SECP384R1};
    static const char *const names[] = {"secp256r1", "x25519", "secp384r1"};
    for (int k = 0; k < 3; k++) {
        mbedtls_ecp_group g;
        mbedtls_mpi da, db, z;
        mbedtls_ecp_point qa, qb;
        mbedtls_ecp_group_init(&g);
        mbedtls_mpi_init(&da);
        mbedtls_mpi_init(&db);
        mbedtls_mpi_init(&z);
        mbedtls_ecp_point_init(&qa);
        mbedtls_ecp_point_init(&qb);
        mbedtls_ecp_group_load(&g, groups[k]);
        mbedtls_ecdh_gen_public(&g, &db, &qb, mbedtls_ctr_drbg_random, &d);
        int n = 20;
        double t = cpu_now();
        for (int i = 0; i < n; i++) { /* our key pair and the shared secret */
            mbedtls_ecdh_gen_public(&g, &da, &qa, mbedtls_ctr_drbg_random, &d);
            mbedtls_ecdh_compute_shared(&g, &z, &qb, &da, mbedtls_ctr_drbg_random, &d);
        }
        printf("%s\"%s\":%.2f", k ? "," : "", names[k], (cpu_now() - t) / n * 1e3);
        mbedtls_ecp_point_free(&qa);
        mbedtls_ecp_point_free(&qb);
        mbedtls_mpi_free(&da);
        mbedtls_mpi_free(&db);
        mbedtls_mpi_free(&z);
        mbedtls_ecp_group_free(&g);
    }
    mbedtls_ecdsa_context s;
    mbedtls_ecdsa_init(&s);
    unsigned char h[32] = {1}, sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sl = 0;
    mbedtls_ecdsa_genkey(&s, MBEDTLS_ECP_DP_SECP256R1, mbedtls_ctr_drbg_random, &d);
    mbedtls_ecdsa_write_signature(&s, MBEDTLS_MD_SHA256, h, sizeof(h), sig, &sl,
                                  mbedtls_ctr_drbg_random, &d);
    int n = 20;
    double t = cpu_now();
    for (int i = 0; i < n; i++)
        mbedtls_ecdsa_read_signature(&s, h, sizeof(h), sig, sl);
    printf("},\"ecdsa_p256_verify_ms\":%.2f}\n", (cpu_now() - t) / n * 1e3);
    mbedtls_ecdsa_free(&s);
    mbedtls_ctr_drbg_free(&d);
    mbedtls_entropy_free(&e);
    return 0;
}
