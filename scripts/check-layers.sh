#!/usr/bin/env bash
# The import rule of docs/architecture.md: a floor imports only the floors below it. Fails,
# naming each line, when a module reaches up (a `crate::` path in code, not in a comment).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
# Prints `file:line:text` for each path that names one of $ROOMS (`a|b|c`) under `crate::`:
# `crate::room` directly, or `crate::{…, room::…}` in a group, which may span lines and nest.
# Lines that are only a comment are skipped.
# shellcheck disable=SC2016 # Perl, not the shell, expands these.
find_imports='
  my $rooms = qr/^(?:$ENV{ROOMS})$/;
  for my $file (@ARGV) {
    open(my $in, "<", $file) or die "$file: $!";
    my @lines = map { m{^\s*//} ? "\n" : $_ } <$in>;
    my $text = join "", @lines;
    my %hit;
    my $line_at = sub { substr($text, 0, $_[0]) =~ tr/\n// };
    while ($text =~ /crate::(\w+)\b/g) {
      my ($name, $at) = ($1, $-[0]);
      $hit{$line_at->($at)} = 1 if $name =~ $rooms;
    }
    while ($text =~ /crate::\{/g) {
      my ($depth, $start) = (1, pos $text);
      # The first name of each member of the group (nested groups count as their member).
      for (my $i = $start; $i < length $text && $depth > 0; $i++) {
        my $c = substr($text, $i, 1);
        if ($c eq "{") { $depth++ } elsif ($c eq "}") { $depth-- }
        next unless $depth == 1 && ($i == $start || $c eq ",");
        my $member = $i == $start ? $i : $i + 1;
        next unless substr($text, $member) =~ /^\s*(\w+)/;
        my ($name, $at) = ($1, $member + $-[1]);
        $hit{$line_at->($at)} = 1 if $name =~ $rooms;
      }
    }
    for my $line (sort { $a <=> $b } keys %hit) {
      print "$file:", $line + 1, ":$lines[$line]";
    }
  }'
# forbid FILES_OR_DIRS... -- ROOMS...: none of the files may name crate::ROOM.
forbid() {
  local paths=() rooms=()
  while [ "$1" != "--" ]; do paths+=("$1"); shift; done
  shift
  rooms=("$@")
  local present=()
  for path in "${paths[@]}"; do [ -e "$path" ] && present+=("$path"); done
  [ ${#present[@]} -gt 0 ] || return 0
  paths=("${present[@]}")
  local hits
  hits=$(find "${paths[@]}" -name '*.rs' -print0 | sort -z |
    ROOMS="$(IFS='|'; echo "${rooms[*]}")" xargs -0 -r perl -e "$find_imports")
  if [ -n "$hits" ]; then
    echo "check-layers: ${paths[*]} must not import ${rooms[*]}:" >&2
    echo "$hits" >&2
    status=1
  fi
}

above_http="web|middleware|routes|startup|cli|state"
above_rooms="session|signin|forward_auth|oidc|passkeys|dashboard|team"

# Values parsed at the edge, and the primitives under everything.
forbid src/domain src/crypto.rs src/private_fs.rs -- \
  "$above_http|$above_rooms|audit|db|models|mail|settings|logging|keys|schema"
# The database and the audit just above it (every model writes its audit rows in its own
# transaction, so the audit imports no model).
forbid src/db src/schema.rs src/audit -- "$above_http|$above_rooms|models|mail"
# The tables, and the services every room uses.
forbid src/models src/logging src/keys.rs src/settings.rs src/settings src/mail src/metrics.rs -- \
  "$above_http|$above_rooms"
# Mail reads the settings (the sender, the backend), so the settings must not read mail.
forbid src/settings.rs src/settings -- mail
# The rooms: sessions, sign-in, forward auth, passkeys, the dashboard's numbers, the team's
# administration, purge.
forbid src/session src/signin src/forward_auth src/oidc src/passkeys src/dashboard src/team src/purge.rs -- \
  "$above_http"
# HTTP below the route table: pages, errors, the policy, then the middleware.
forbid src/web -- "middleware|routes|startup|cli"
forbid src/middleware -- "routes|startup|cli"

if [ "$status" = 0 ]; then
  echo "check-layers: no module imports a floor above its own"
fi
exit "$status"
