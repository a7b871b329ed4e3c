#!/bin/sh
# Generates test PKI into $1: ca.pem (test CA), localhost.pem/localhost.key (CN/SAN localhost,
# signed by the test CA), other-ca.pem (an unrelated CA that must NOT verify localhost.pem).
set -eu
out=$1
mkdir -p "$out"
cd "$out"
[ -f localhost.pem ] && [ -f other-ca.pem ] && exit 0
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=llmux test CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=llmux other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout localhost.key -out localhost.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile ext.cnf -out localhost.pem 2>/dev/null
echo "certs in $out"
