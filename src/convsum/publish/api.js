// The authenticated read API, in front of a published tree (SPEC sections 1 and 4).
//
// nginx routes `/v2/conversations/{participant}[/mt|/mo|/summary]`, refuses hostile paths and
// methods, and computes the participant's fan-out directories (`$cs_participant_fanout`, from
// the MD5 of the name as nginx decodes it). This script does the rest: the owner from the Bearer
// token, the slice of the list the request asks for, the Link header, the ETag and every error
// as an RFC 9457 problem. Its settings come from `js_var`s of the generated configuration.
//
// The tree's files come from the local directory (`$cs_bucket` 0: read at once, or through the
// internal location OBJECT when stored gzip-compressed) or from a bucket (1: each through OBJECT,
// which proxies to the bucket and caches); the token store is always a local directory.
//
// njs runs each request in a fresh copy of this module: nothing is kept between requests, so a
// token that is added or revoked takes effect at the next request.

var fs = require('fs');
var crypto = require('crypto');

var PAGINATION_TYPE = '/v2/problems/pagination-parameters-invalid';
var OBJECT = '/.convsum-object';  // publish.nginx.OBJECT_URI
var GZIP = '.gz';  // publish.storage.GZIP_SUFFIX
var TOKEN = /^Bearer +([A-Za-z0-9\-._~+\/]+=*) *$/i;
var DIGITS = /^[0-9]{1,15}$/;
// Every page is `[` + its messages, each written as `{"id":...}`, joined by `,` + `]`: `id` is
// the first key of a message (SPEC section 1) and no other object in a page starts with it.
// Inside a JSON string a `"` is escaped, so `,{"id":` is always a boundary between messages.
var BOUNDARY = Buffer.from(',{"id":');

function problem(r, status, title, detail, extra) {
    var body = {type: 'about:blank', title: title, status: status, detail: detail};
    if (extra) {
        Object.keys(extra).forEach(function (key) { body[key] = extra[key]; });
    }
    r.headersOut['Content-Type'] = 'application/problem+json';
    r.headersOut['Cache-Control'] = 'no-store';
    r.return(status, JSON.stringify(body));
}

function unauthorized(r, given) {
    r.headersOut['WWW-Authenticate'] = given ? 'Bearer error="invalid_token"' : 'Bearer';
    problem(r, 401, 'Unauthorized', given
        ? 'the Bearer token is unknown or revoked'
        : 'send the API token as `Authorization: Bearer <token>`');
}

function failed(r, detail) {
    r.error('convsum: ' + detail);
    problem(r, 500, 'Internal Server Error', 'the server could not read its data');
}

// The file's bytes, or null when it does not exist. Bytes, not text: decoding UTF-8 into an njs
// string costs more than all the rest of a request.
function readOrNull(path) {
    try {
        return fs.readFileSync(path);
    } catch (e) {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
            return null;
        }
        throw e;
    }
}

// Without an exception for a missing file: njs builds one at the cost of a whole page read.
function exists(path) {
    return fs.lstatSync(path, {throwIfNoEntry: false}) !== undefined;
}

// A file of the tree as {bytes, tag}, or null when it does not exist. The tag changes whenever
// the file does: its inode, size and modification time, taken from the open file, so that they
// describe the bytes read (the tree's files are replaced by rename, never rewritten in place).
function readTagged(path) {
    var fd;
    try {
        fd = fs.openSync(path);
    } catch (e) {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
            return null;
        }
        throw e;
    }
    try {
        var stat = fs.fstatSync(fd);
        var bytes = Buffer.allocUnsafe(stat.size);
        var done = 0;
        while (done < stat.size) {
            var got = fs.readSync(fd, bytes, done, stat.size - done, done);
            if (got === 0) {
                throw new Error(path + ': shorter than its size');
            }
            done += got;
        }
        return {bytes: bytes, tag: stat.ino + '-' + stat.size + '-' + stat.mtimeMs};
    } finally {
        fs.closeSync(fd);
    }
}

// The files of the served tree, by their path under its API root (or, for `manifest.json`, under
// the bucket's prefix): read(path) is a promise of the file as {bytes, tag} (the tag changes
// whenever the file does: see readTagged; from a bucket, the object's ETag), or of null for none.
function Files(r) {
    this.r = r;
    this.bucket = r.variables.cs_bucket === '1';
    this.root = r.variables.document_root;
}

// A local file is read at once, unless the tree stores it gzip-compressed as `PATH.gz`
// (publish.storage): njs cannot decode gzip, so nginx reads it, as it reads a bucket's object.
// The `.gz` is looked for first: a failed open would cost an exception (see `exists`).
Files.prototype.read = function (path) {
    if (!this.bucket && !exists(this.root + '/' + path + GZIP)) {
        return Promise.resolve(readTagged(this.root + '/' + path));
    }
    return this.fetch(path);
};

Files.prototype.exists = function (path) {
    var local = this.root + '/' + path;
    return exists(local) || exists(local + GZIP);
};

// The file through nginx (OBJECT): the bucket's object, or a local `.gz` file, decoded by
// nginx's gunzip filter either way.
Files.prototype.fetch = function (path) {
    // The path goes as an argument: a subrequest's URI is taken as it is written, where a `?`
    // of a name would end the path.
    return this.r.subrequest(OBJECT, 'key=' + encodeURIComponent(path)).then(function (reply) {
        if (reply.status === 200) {
            var tag = reply.headersOut.ETag;
            if (!tag) {
                throw new Error('nginx sent ' + path + ' without an ETag');
            }
            return {bytes: reply.responseBuffer || Buffer.from(''), tag: tag};
        }
        if (reply.status === 403 || reply.status === 404) {
            return null;  // what a bucket answers an anonymous reader for a missing object
        }
        throw new Error('nginx answered ' + reply.status + ' for ' + path);
    });
};

// The owner's directory under the served root, from the token store; null once answered.
function ownerDir(r) {
    var header = r.headersIn.Authorization;
    var match = header ? TOKEN.exec(header) : null;
    if (!match) {
        unauthorized(r, Boolean(header));
        return null;
    }
    var hash = crypto.createHash('sha256').update(match[1]).digest('hex');
    var entry = readOrNull(r.variables.cs_tokens + '/' + hash);
    if (entry === null) {
        unauthorized(r, true);
        return null;
    }
    var dir = entry.toString().trim();
    var segments = dir.split('/');
    var unsafe = segments.some(function (s) {
        return s === '' || s === '.' || s === '..' || s.indexOf('\0') >= 0;
    });
    if (unsafe) {
        failed(r, 'token entry ' + hash.slice(0, 12) + '... is not an owner directory');
        return null;
    }
    return dir;
}

function argument(r, errors, name, fallback, check, accepted) {
    var value = r.args[name];
    if (value === undefined) {
        return fallback;
    }
    var parsed = Array.isArray(value) ? undefined : check(value);
    if (parsed === undefined) {
        var shown = Array.isArray(value) ? 'given ' + value.length + ' times'
            : value === '' ? 'empty' : JSON.stringify(value.slice(0, 40));
        errors.push({name: name, reason: name + ' must be ' + accepted + ' (' + shown + ')'});
    }
    return parsed;
}

// start, limit and order, or null once a 400 is answered.
function pagination(r) {
    var max = Number(r.variables.cs_max_limit);
    var errors = [];
    var start = argument(r, errors, 'start', 0, function (v) {
        return DIGITS.test(v) ? Number(v) : undefined;
    }, 'a whole number from 0');
    var limit = argument(r, errors, 'limit', 50, function (v) {
        var n = DIGITS.test(v) ? Number(v) : 0;
        return n >= 1 && n <= max ? n : undefined;
    }, 'a whole number from 1 to ' + max);
    var order = argument(r, errors, 'order', 'ASC', function (v) {
        var upper = v.toUpperCase();
        return upper === 'ASC' || upper === 'DESC' ? upper : undefined;
    }, 'ASC or DESC, in any case');
    if (errors.length) {
        problem(r, 400, 'Pagination parameters invalid',
            errors.map(function (e) { return e.reason; }).join('; '),
            {type: PAGINATION_TYPE, 'invalid-params': errors});
        return null;
    }
    return {start: start, limit: limit, order: order};
}

var COMMA = Buffer.from(',');
var OPEN = Buffer.from('[');
var CLOSE = Buffer.from(']');

// The messages of one page, as views of its bytes (a page is never empty).
function messages(page) {
    var found = [];
    var from = 1;
    var at = page.indexOf(BOUNDARY, from);
    while (at >= 0) {
        found.push(page.subarray(from, at));
        from = at + 1;
        at = page.indexOf(BOUNDARY, from);
    }
    found.push(page.subarray(from, page.length - 1));
    return found;
}

// `[` + the parts joined by `,` + `]`.
function array(parts) {
    var pieces = [OPEN];
    parts.forEach(function (part, i) {
        pieces.push(i ? COMMA : OPEN.subarray(0, 0), part);
    });
    pieces.push(CLOSE);
    return Buffer.concat(pieces);
}

// One list of one conversation: its ASC page files, read at most once each.
function List(files, conversation, name, size, groupDigits) {
    this.files = files;
    this.conversation = conversation;
    this.name = name;
    this.size = size;
    this.groupDigits = groupDigits;
    this.pages = {};
}

// publish.paths.page_file and conversation_file: the group directory is the start without its
// last k digits; the first group's pages have none.
List.prototype.path = function (index) {
    var digits = String(index * this.size);
    var group = digits.slice(0, Math.max(digits.length - this.groupDigits, 0));
    var name = this.name + '.asc.' + digits + '.json';
    return this.conversation + '.' + (group ? 'p' + group + '/' : '') + name;
};

// A promise of the page as {bytes, tag}, or of null when there is no such page.
List.prototype.page = function (index) {
    if (!(index in this.pages)) {
        this.pages[index] = this.files.read(this.path(index));
    }
    return this.pages[index];
};

List.prototype.present = function (index) {
    if (this.files.bucket) {
        return this.page(index).then(function (page) { return page !== null; });
    }
    return Promise.resolve(this.files.exists(this.path(index)));
};

// The body of ASC positions [from, to) of a list of n (n >= to > from) as {bytes, tags} (those of
// the pages read), or null when a page went missing meanwhile. Whole pages are copied as they
// are; only the first and last are cut into messages.
List.prototype.slice = async function (from, to, n, reverse) {
    var first = Math.floor(from / this.size);
    var last = Math.floor((to - 1) / this.size);
    var wanted = [];
    for (var index = first; index <= last; index++) {
        wanted.push(this.page(index));
    }
    var files = await Promise.all(wanted);  // from a bucket, all requests at once
    if (files.some(function (file) { return file === null; })) {
        return null;
    }
    var tags = files.map(function (file) { return file.tag; });
    var whole = from === first * this.size && (to - from === this.size || to === n);
    if (first === last && whole && (!reverse || to - from === 1)) {
        return {bytes: files[0].bytes, tags: tags};  // one whole page: its file as it is
    }
    var pages = files.map(function (file) { return file.bytes; });
    var parts = [];
    for (var i = 0; i < pages.length; i++) {
        var low = from - (first + i) * this.size;
        var high = to - (first + i) * this.size;
        if (!reverse && low <= 0 && high >= this.size) {
            parts.push(pages[i].subarray(1, pages[i].length - 1));
            continue;
        }
        var all = messages(pages[i]);
        parts.push.apply(parts, all.slice(Math.max(low, 0), Math.min(high, all.length)));
    }
    return {bytes: array(reverse ? parts.reverse() : parts), tags: tags};
};

function sum(map) {
    return Object.keys(map).reduce(function (total, code) { return total + map[code].messages; }, 0);
}

// The number of messages in the list, or -2 when a page went missing meanwhile. The summary
// gives it for the whole conversation (totalMessageCount), and for one direction within bounds:
// at least the messages that have a status and this direction, at most all but those that have
// a status and the other. The bounds are equal unless some messages have no status; otherwise
// the page count lies between theirs, and the last page is found (a binary search of page
// existence over that range) and its messages counted.
List.prototype.count = async function (summary) {
    var total = summary.totalMessageCount;
    if (typeof total !== 'number') {
        throw new Error(this.conversation + ': a summary without totalMessageCount');
    }
    if (this.name === 'all') {
        return total;
    }
    var own = this.name === 'mt' ? summary.mobileTerminatedMessages
        : summary.mobileOriginatedMessages;
    var other = this.name === 'mt' ? summary.mobileOriginatedMessages
        : summary.mobileTerminatedMessages;
    var low = sum(own);
    var high = total - sum(other);
    if (low === high) {
        return low;
    }
    var present = Math.ceil(low / this.size);  // pages [0, present) exist
    var absent = Math.ceil(high / this.size) + 1;  // page absent - 1 may be the last
    if (present > 0 && !(await this.present(present - 1))) {
        return -2;
    }
    while (absent - present > 1) {
        var middle = Math.floor((present + absent) / 2);
        if (await this.present(middle - 1)) {
            present = middle;
        } else {
            absent = middle;
        }
    }
    // `present` pages exist and no more.
    if (present === 0) {
        return 0;
    }
    var tail = await this.page(present - 1);
    if (tail === null) {
        return -2;
    }
    return (present - 1) * this.size + messages(tail.bytes).length;
};

// scheme://host of the request, as the client sent it or as a trusted proxy passed it on.
function origin(r) {
    var v = r.variables;
    var scheme = v.scheme;
    var host = v.http_host;
    if (v.cs_trusted_proxy === '1') {
        var proto = (r.headersIn['X-Forwarded-Proto'] || '').split(',')[0].trim().toLowerCase();
        var forwarded = (r.headersIn['X-Forwarded-Host'] || '').split(',')[0].trim();
        scheme = proto === 'http' || proto === 'https' ? proto : scheme;
        host = forwarded || host;
    }
    if (!host || !/^[A-Za-z0-9.\-_~\[\]:]+$/.test(host)) {
        host = v.server_addr.indexOf(':') >= 0 ? '[' + v.server_addr + ']' : v.server_addr;
        host += ':' + v.server_port;
    }
    return scheme + '://' + host;
}

function linkHeader(r, path, page, n) {
    var base = origin(r) + path + '?start=';
    var tail = '&limit=' + page.limit + '&order=' + page.order + '>; rel="';
    var links = [[0, 'first']];
    if (page.start > 0) {
        links.push([Math.max(page.start - page.limit, 0), 'prev']);
    }
    if (page.start + page.limit < n) {
        links.push([page.start + page.limit, 'next']);
    }
    links.push([n > 0 ? Math.floor((n - 1) / page.limit) * page.limit : 0, 'last']);
    return links.map(function (l) { return '<' + base + l[0] + tail + l[1] + '"'; }).join(', ');
}

// A weak validator: gzip changes the bytes but not what they say.
function fresh(r, etag) {
    var given = r.headersIn['If-None-Match'];
    if (!given) {
        return false;
    }
    var tag = etag.slice(2);
    return given.split(',').some(function (t) {
        t = t.trim();
        return t === '*' || t === tag || t === 'W/' + tag;
    });
}

// `validator` is text that changes whenever the body does (hashing it, not a body of up to
// megabytes, is what keeps a long answer cheap). gzip_vary is off in the configuration so that
// one Vary names both.
function ok(r, body, validator, cacheControl, vary) {
    var etag = 'W/"' + crypto.createHash('md5').update(validator).digest('hex') + '"';
    r.headersOut.ETag = etag;
    r.headersOut['Cache-Control'] = cacheControl;
    r.headersOut.Vary = vary;
    r.headersOut['Content-Type'] = 'application/json';
    r.return(fresh(r, etag) ? 304 : 200, body);
}

async function answerList(r, list, summary, path) {
    var page = pagination(r);
    if (page === null) {
        return;
    }
    var n = await list.count(summary);
    var body = {bytes: Buffer.from('[]'), tags: []};
    var end = Math.min(page.start + page.limit, n);
    if (n >= 0 && page.start < end) {
        body = page.order === 'ASC'
            ? await list.slice(page.start, end, n, false)
            : await list.slice(n - end, n - page.start, n, true);
    }
    if (n < 0 || body === null) {
        r.headersOut['Retry-After'] = '1';
        problem(r, 503, 'Service Unavailable', 'the conversation is being updated; try again');
        return;
    }
    r.headersOut.Link = linkHeader(r, path, page, n);
    var validator = [page.start, page.limit, page.order, n].concat(body.tags).join(' ');
    ok(r, body.bytes, validator, r.variables.cs_cache_control, 'Accept-Encoding, Authorization');
}

async function conversation(r) {
    var v = r.variables;
    var owner = ownerDir(r);
    if (owner === null) {
        return;
    }
    var files = new Files(r);
    var participant = v.cs_participant;
    var conversation = owner + '/v2/conversations/' + v.cs_participant_fanout + '/' + participant;
    var summary = await files.read(conversation + '.summary.json');
    if (summary === null) {
        problem(r, 404, 'Not Found', 'no such participant');
        return;
    }
    var endpoint = v.cs_endpoint || '';
    if (endpoint === 'summary') {
        ok(r, summary.bytes, summary.tag, v.cs_cache_control, 'Accept-Encoding, Authorization');
        return;
    }
    if (v.cs_lists !== '1') {
        // A run with --only summaries: the participant's summary exists, its lists do not.
        problem(r, 404, 'Not Found', 'this run published summaries only');
        return;
    }
    var list = new List(files, conversation, endpoint || 'all', Number(v.cs_page_size),
        Number(v.cs_page_group_digits));
    var path = '/v2/conversations/' + encodeURIComponent(participant) +
        (endpoint ? '/' + endpoint : '');
    await answerList(r, list, JSON.parse(summary.bytes.toString()), path);
}

function guarded(handler) {
    return function (r) {
        handler(r).catch(function (e) {
            failed(r, String(e));
        });
    };
}

// Which run is served, and since when: no owner's data.
async function health(r) {
    var files = new Files(r);
    var manifest;
    try {
        manifest = files.bucket ? await files.read(r.variables.cs_manifest)
            : readTagged(r.variables.cs_manifest);
        if (manifest === null) {
            throw new Error('no ' + r.variables.cs_manifest);
        }
        manifest = JSON.parse(manifest.bytes.toString());
    } catch (e) {
        r.error('convsum: ' + String(e));
        problem(r, 503, 'Service Unavailable', 'no published run to serve');
        return;
    }
    var body = JSON.stringify({
        status: 'ok', run_id: manifest.run_id, started_at: manifest.started_at,
        newest_input: manifest.newest_input === undefined ? null : manifest.newest_input,
    });
    ok(r, body, body, 'no-cache', 'Accept-Encoding');
}

export default {conversation: guarded(conversation), health: guarded(health)};
