"""In charge of the mailbox a user lives in (issue 17): folders (inbox, sent, Archive,
Drafts, Trash and the user's own), moving, flags, Trash with its age limit, search,
conversations, drafts kept on the server and importing mail from files.

    names        the rules for a folder name
    query        the search language, parsed strictly into a `Query`
    records      every SQL string of the feature (tables: schema.py migrations 6, 8, 9)
    operations   the SOAP operations (ListFolders, CreateFolder, RenameFolder,
                 DeleteFolder, Move, SetFlags, Search) and the Trash step of Delete
    drafts       drafts kept in Drafts: SaveDraft, GetDraft, ListDrafts, DeleteDraft,
                 SendDraft (the draft becomes a real Send, once)
    importing    ImportMessages: RFC 5322 messages into a folder, marked imported
    limits       the size limit and the quota over what the owner adds
    threads      the conversation operations (ListThreads, GetThread)
    retrieval    the form in which a stored copy goes back to its reader
    maintenance  emptying Trash of what has been there longer than `trash_days`
"""
