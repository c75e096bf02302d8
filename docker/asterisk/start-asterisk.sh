#!/bin/sh
# Demo only (docker/compose.yaml): render the two config files that carry
# credentials from environment variables, then run Asterisk in the
# foreground. Runs as root through the image's entrypoint; Asterisk itself
# drops to user asterisk (-U/-G).
set -eu

TEMPLATES=/etc/asterisk-templates
NAMES="AMI_SECRET AMI_IT_SECRET SIP_PASSWORD_2000 SIP_PASSWORD_2001"
# envsubst replaces only these, so nothing else in the files is touched.
SHELL_FORMAT='${AMI_SECRET} ${AMI_IT_SECRET} ${SIP_PASSWORD_2000} ${SIP_PASSWORD_2001}'

for name in $NAMES; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "start-asterisk: $name is empty" >&2
        exit 1
    fi
    # A ';' starts a comment and a newline a new setting in Asterisk config
    # files: allow only characters that cannot change the file's meaning.
    case "$value" in
        *[!A-Za-z0-9._+-]*)
            echo "start-asterisk: $name may contain only letters, digits and . _ + -" >&2
            exit 1
            ;;
    esac
done

render() {
    target="/etc/asterisk/$1"
    envsubst "$SHELL_FORMAT" < "$TEMPLATES/$1" > "$target.tmp"
    chown asterisk:asterisk "$target.tmp"
    chmod 0640 "$target.tmp"
    mv "$target.tmp" "$target"
}

render manager.conf
render pjsip.conf

exec /usr/sbin/asterisk -f -vvv -T -U asterisk -G asterisk
