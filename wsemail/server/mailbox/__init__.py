"""In charge of the mailbox a user lives in (issue 17): folders (inbox, sent, Archive,
Drafts, Trash and the user's own), moving, flags, Trash with its age limit, search,
drafts kept on the server and importing mail from files.

    names        the rules for a folder name
    query        the search language, parsed strictly into a `Query`
    records      every SQL string of the feature (tables in store.py migration 6)
    operations   the SOAP operations (ListFolders, CreateFolder, RenameFolder,
                 DeleteFolder, Move, SetFlags, Search) and the Trash step of Delete
    drafts       drafts kept in Drafts: SaveDraft, GetDraft, ListDrafts, DeleteDraft,
                 SendDraft (the draft becomes a real Send, once)
    importing    ImportMessages: RFC 5322 messages into a folder, marked imported
    limits       the size limit and the quota over what the owner adds
    maintenance  emptying Trash of what has been there longer than `trash_days`
"""
