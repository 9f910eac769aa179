# shellcheck shell=bash
# TLS files for the local broker's SSL listener, made with openssl on first use:
# a CA (ca.pem: what clients trust) and a broker certificate for 127.0.0.1 and
# localhost, in a PKCS12 keystore whose password is in a file beside it.

# Makes (unless present) DIR/{ca.pem,broker.p12,keystore.password}.
make_tls_files() { # dir
  local dir=$1
  if [[ -s $dir/ca.pem && -s $dir/broker.p12 && -s $dir/keystore.password ]]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || missing_tool openssl openssl
  rm -rf "$dir"
  mkdir -p "$dir"
  (
    umask 077
    set -e
    openssl rand -hex 16 >"$dir/keystore.password"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=torchkafka local CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/broker.key" -out "$dir/broker.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
    openssl x509 -req -days 3650 -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -extfile "$dir/san.ext" -out "$dir/broker.pem"
    openssl pkcs12 -export -name broker -in "$dir/broker.pem" -inkey "$dir/broker.key" \
      -passout "file:$dir/keystore.password" -out "$dir/broker.p12"
  ) >"$dir/openssl.log" 2>&1 || {
    cat "$dir/openssl.log" >&2
    die "making TLS files in $dir with openssl failed"
  }
  chmod 644 "$dir/ca.pem"
}
