#!/bin/sh
# The quotes service's only page (busybox httpd runs it as /cgi-bin/index.cgi, so it answers
# GET /): one random line of /www/quotes.txt, lines from the film The Room (Tommy Wiseau, 2003).
PATH=/bin
count=$(wc -l < /www/quotes.txt)
line=$(( RANDOM % count + 1 ))
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
sed -n "${line}p" /www/quotes.txt
